//! The Docker layer against the real engine: the workload image, a full client/server round trip
//! on a user-defined bridge network, error paths and the label-based cleanup.
//!
//! Needs root and a running Docker engine; each test prints `skipping: …` and returns otherwise.
//! Nothing is ever pulled. Every object a test creates is removed by a [`Cleanup`] guard, also
//! when the test fails.
use std::{net::IpAddr, path::Path, sync::Mutex, time::Instant};

use dockertrace::{
    docker::{ContainerSpec, Docker, NetworkSpec, LABEL},
    workload::WorkloadReport,
};

/// Tests that create labelled objects run one at a time: `remove_all_labelled` must not see
/// another test's objects half-way. (A tokio mutex: the guard lives across awaits.)
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Root and a reachable engine, or `None` after printing why the test is skipped.
async fn engine() -> Option<Docker> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: not root");
        return None;
    }
    match Docker::connect().await {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// A run id unique to this test process and test.
fn run_id(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

fn labels(run: &str) -> std::collections::HashMap<String, String> {
    [(LABEL.to_owned(), run.to_owned())].into()
}

/// Removes what a test created when dropped (panics included): containers first, then networks,
/// then images, through a fresh runtime on its own thread (Drop cannot await).
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    networks: Vec<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (containers, networks, images) = (
            std::mem::take(&mut self.containers),
            std::mem::take(&mut self.networks),
            std::mem::take(&mut self.images),
        );
        if containers.is_empty() && networks.is_empty() && images.is_empty() {
            return;
        }
        let worker = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return eprintln!("cleanup: no runtime: {e}"),
            };
            rt.block_on(async {
                let d = match Docker::connect().await {
                    Ok(d) => d,
                    Err(e) => return eprintln!("cleanup: {e}"),
                };
                for c in &containers {
                    if let Err(e) = d.remove_container(c).await {
                        eprintln!("cleanup: {e}");
                    }
                }
                for n in &networks {
                    if let Err(e) = d.remove_network(n).await {
                        eprintln!("cleanup: {e}");
                    }
                }
                for i in &images {
                    if let Err(e) = d.remove_image(i).await {
                        eprintln!("cleanup: {e}");
                    }
                }
            });
        });
        if worker.join().is_err() {
            eprintln!("cleanup: the cleanup thread panicked");
        }
    }
}

fn quiet(_: &str) {}

/// The image mechanics, on the test binary itself: the first call builds, the second reuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_image_is_built_once_and_reused() {
    let Some(d) = engine().await else { return };
    let mut cleanup = Cleanup::default();
    let exe = Path::new("/proc/self/exe");

    // Start from scratch: a previous run of this very binary may have left its image.
    let steps = Mutex::new(Vec::<String>::new());
    let record = |s: &str| steps.lock().expect("steps").push(s.to_owned());
    let t0 = Instant::now();
    let tag = d.ensure_image_from(exe, &quiet).await.expect("first ensure_image_from");
    d.remove_image(&tag).await.expect("removing the test image");
    assert!(!d.image_exists(&tag).await.expect("image_exists"), "{tag} still exists after remove_image");
    cleanup.images.push(tag.clone());

    let t1 = Instant::now();
    let built = d.ensure_image_from(exe, &record).await.expect("building the image");
    let build_time = t1.elapsed();
    assert_eq!(built, tag, "same content, same tag");
    assert!(
        built.starts_with("dockertrace-workload:") && built.len() == "dockertrace-workload:".len() + 16,
        "{built}"
    );
    let id = d.image_id(&built).await.expect("image id");
    let log = steps.lock().expect("steps").clone();
    assert!(log.iter().any(|s| s.starts_with(&format!("building image {tag} ("))), "no build step: {log:?}");

    steps.lock().expect("steps").clear();
    let t2 = Instant::now();
    let again = d.ensure_image_from(exe, &record).await.expect("second ensure_image_from");
    let reuse_time = t2.elapsed();
    assert_eq!(again, tag);
    assert_eq!(d.image_id(&again).await.expect("image id"), id, "the second call rebuilt the image");
    let log = steps.lock().expect("steps").clone();
    assert!(!log.iter().any(|s| s.starts_with("building")), "the second call built: {log:?}");
    eprintln!(
        "image {tag}: build {:.2} s, reuse {:.2} s (whole test {:.2} s)",
        build_time.as_secs_f64(),
        reuse_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    // The default entry point hashes the same binary.
    assert_eq!(d.ensure_workload_image(&quiet).await.expect("ensure_workload_image"), tag);
    assert!(!d.server_version().await.expect("server_version").is_empty());
}

/// Server and client containers from the dockertrace image on a user-defined bridge network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_a_user_bridge_network() {
    let Some(d) = engine().await else { return };
    let _serial = SERIAL.lock().await;
    let run = run_id("bridge");
    let mut cleanup = Cleanup::default();

    let t = Instant::now();
    let image = d
        .ensure_image_from(Path::new(env!("CARGO_BIN_EXE_dockertrace")), &|s| eprintln!("image: {s}"))
        .await
        .expect("the dockertrace image");
    eprintln!("dockertrace image {image} ready in {:.2} s", t.elapsed().as_secs_f64());

    let name = format!("dockertrace-{run}");
    // A subnet of our own, to exercise IPAM and fixed addresses.
    let prefix = format!("10.123.{}", std::process::id() % 250);
    let server_ip: IpAddr = format!("{prefix}.10").parse().expect("an address");
    cleanup.networks.push(name.clone());
    let net = d
        .create_network(&NetworkSpec {
            name: name.clone(),
            driver: "bridge".into(),
            subnet: Some(format!("{prefix}.0/24")),
            gateway: Some(format!("{prefix}.1")),
            labels: labels(&run),
            ..Default::default()
        })
        .await
        .expect("creating the network");
    cleanup.networks.push(net.id.clone());
    let dev = net.bridge_dev.clone().expect("a bridge network has a bridge device");
    assert!(Path::new("/sys/class/net").join(&dev).exists(), "bridge device {dev} does not exist");
    assert!(
        d.create_network(&NetworkSpec { name: name.clone(), driver: "bridge".into(), ..Default::default() })
            .await
            .is_err(),
        "duplicate network name accepted"
    );

    let mut started = Vec::new();
    for (role, cmd, ip) in [
        ("server", vec!["workload", "server", "--port", "10000", "--quiet"], Some(server_ip)),
        ("client", vec!["workload", "idle"], None),
    ] {
        let cname = format!("dockertrace-{run}-{role}");
        cleanup.containers.push(cname.clone());
        let info = d
            .run_container(&ContainerSpec {
                name: cname,
                image: image.clone(),
                cmd: cmd.into_iter().map(str::to_owned).collect(),
                network: name.clone(),
                ip,
                labels: labels(&run),
                cpuset: None,
            })
            .await
            .unwrap_or_else(|e| panic!("starting the {role}: {e}"));
        assert!(info.pid > 0, "{role}: pid {}", info.pid);
        assert!(
            Path::new(&format!("/proc/{}/ns/net", info.pid)).exists(),
            "{role}: no netns for pid {}",
            info.pid
        );
        assert!(info.ip.is_some(), "{role}: no address");
        started.push(info);
    }
    let (server, client) = (&started[0], &started[1]);
    assert_eq!(server.ip, Some(server_ip), "the fixed address was not applied");
    let server_ip = server_ip.to_string();
    eprintln!(
        "server {} at {server_ip} (pid {}), client {} (pid {})",
        server.name, server.pid, client.name, client.pid
    );

    let cmd: Vec<String> =
        ["/dockertrace", "workload", "client", &server_ip, "--port", "10000", "--count", "200", "--json"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    let t = Instant::now();
    let out = d.exec(&client.id, &cmd).await.expect("exec of the client");
    eprintln!("client ran in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(
        out.exit_code,
        0,
        "client failed: stdout {:?} stderr {:?}; server logs: {:?}",
        out.stdout,
        out.stderr,
        d.logs(&server.id).await
    );
    let report = WorkloadReport::parse_json_line(&out.stdout).expect("the client's JSON report");
    assert_eq!(report.messages, 200, "{report:?}");

    // A failing command reports its exit code and stderr rather than hanging or erroring.
    let fail: Vec<String> =
        ["/dockertrace", "workload", "client", "--no-such-flag"].into_iter().map(str::to_owned).collect();
    let out = d.exec(&client.id, &fail).await.expect("exec of a failing command");
    assert_ne!(out.exit_code, 0);
    assert!(out.stderr.contains("no-such-flag"), "stderr: {:?}", out.stderr);

    // Teardown through the API itself, then make sure nothing is left.
    for c in [&server.id, &client.id] {
        d.remove_container(c).await.expect("removing a container");
    }
    d.remove_network(&net.id).await.expect("removing the network");
    assert!(d.labelled_containers(Some(&run)).await.expect("listing").is_empty());
    assert!(d.labelled_networks(Some(&run)).await.expect("listing").is_empty());
    assert!(!Path::new("/sys/class/net").join(&dev).exists(), "bridge device {dev} survived its network");
}

/// Missing objects: exec fails with an error; removals are idempotent.
#[tokio::test]
async fn missing_objects() {
    let Some(d) = engine().await else { return };
    let err = d
        .exec("dockertrace-no-such-container", &["/dockertrace".to_owned()])
        .await
        .expect_err("exec in a missing container");
    assert!(err.is_not_found(), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains('\n') && msg.contains("dockertrace-no-such-container"), "{msg}");
    d.remove_container("dockertrace-no-such-container").await.expect("removing a missing container");
    d.remove_network("dockertrace-no-such-network").await.expect("removing a missing network");
    d.remove_image("dockertrace-workload:no-such-tag").await.expect("removing a missing image");
    assert!(!d.image_exists("dockertrace-workload:no-such-tag").await.expect("image_exists"));
    let err = d
        .run_container(&ContainerSpec {
            name: format!("dockertrace-{}", run_id("noimage")),
            image: "dockertrace-workload:no-such-tag".into(),
            network: "bridge".into(),
            ..Default::default()
        })
        .await
        .expect_err("a container from a missing image");
    assert!(err.is_not_found(), "{err:?}");
}

/// A "crashed" run leaves a labelled network and container behind; the cleanup finds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_all_labelled_clears_a_crashed_run() {
    let Some(d) = engine().await else { return };
    let _serial = SERIAL.lock().await;
    let run = run_id("crash");
    let mut cleanup = Cleanup::default();
    let image = d
        .ensure_image_from(Path::new(env!("CARGO_BIN_EXE_dockertrace")), &quiet)
        .await
        .expect("the dockertrace image");

    let name = format!("dockertrace-{run}");
    cleanup.networks.push(name.clone());
    cleanup.containers.push(name.clone());
    d.create_network(&NetworkSpec {
        name: name.clone(),
        driver: "bridge".into(),
        labels: labels(&run),
        ..Default::default()
    })
    .await
    .expect("creating the network");
    d.run_container(&ContainerSpec {
        name: name.clone(),
        image,
        cmd: vec!["workload".into(), "idle".into()],
        network: name.clone(),
        ip: None,
        labels: labels(&run),
        cpuset: None,
    })
    .await
    .expect("starting the container");
    // The run "crashes" here: its ids are forgotten.

    // Other dockertrace objects (a real run in progress) must not be destroyed by a test: only
    // then is the machine-wide cleanup exercised, else the run-scoped one.
    let ours_c = d.labelled_containers(Some(&run)).await.expect("listing");
    let ours_n = d.labelled_networks(Some(&run)).await.expect("listing");
    assert_eq!((ours_c.len(), ours_n.len()), (1, 1));
    let all_c = d.labelled_containers(None).await.expect("listing");
    let all_n = d.labelled_networks(None).await.expect("listing");
    let foreign = all_c.len() + all_n.len() - 2;
    let (c, n) = if foreign == 0 {
        d.remove_all_labelled().await.expect("remove_all_labelled")
    } else {
        eprintln!("note: {foreign} other dockertrace objects exist; testing the run-scoped removal only");
        d.remove_labelled(Some(&run)).await.expect("remove_labelled")
    };
    assert_eq!((c, n), (1, 1), "removed containers, networks");
    assert!(d.labelled_containers(Some(&run)).await.expect("listing").is_empty(), "a container remains");
    assert!(d.labelled_networks(Some(&run)).await.expect("listing").is_empty(), "a network remains");
    if foreign == 0 {
        assert_eq!(d.remove_all_labelled().await.expect("second cleanup"), (0, 0));
    }
}
