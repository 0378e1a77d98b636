//! The datapath family: a kprobe and an fentry twin on each function of
//! `dockertrace_common::datapath::DATAPATH_FUNCS` (veth, bridge, macvlan, ipvlan, vxlan, loopback
//! transmit paths). Each function gets a kprobe where the kernel has kprobes, else fentry, else
//! a reason the user is shown; with it its return twin (kretprobe, fexit), whose events give
//! the function's duration on the hop its entry made (`kretprobe:veth_xmit`).
use std::path::Path;

use aya::{
    maps::Array,
    programs::{FEntry, FExit, KProbe, ProgramError},
    Btf, Ebpf,
};
use dockertrace_common::datapath::{
    DatapathFunc, CLONE_FUNC, CLONE_INDEX, DATAPATH_FUNCS, PROBE_BASE, RET_BASE,
};

use super::{is_eperm, short, AttachEnv, AttachedProgram, Catalog, Family};
use crate::{kernel::kallsyms::Kallsyms, trace_error::TraceError};

/// How a datapath probe ended up.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    Kprobe,
    Fentry,
    /// The function is not in the running kernel (e.g. its module is not loaded).
    NotPresent,
    /// Present, but neither kprobe nor fentry could attach; the reason says why.
    Unavailable,
}

/// One datapath probe's outcome, reported to the user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeStatus {
    pub function: &'static str,
    pub state: ProbeState,
    pub reason: String,
    /// The return twin is attached too (kretprobe with a kprobe, fexit with an fentry): the
    /// function's duration is measured.
    pub returns: bool,
}

impl ProbeStatus {
    /// Whether the probe is attached (by kprobe or fentry).
    pub fn attached(&self) -> bool {
        matches!(self.state, ProbeState::Kprobe | ProbeState::Fentry)
    }
}

impl std::fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ret = |r| if self.returns { r } else { "" };
        match self.state {
            ProbeState::Kprobe if self.reason.is_empty() => {
                write!(f, "{}: kprobe{}", self.function, ret(" + kretprobe"))
            }
            ProbeState::Kprobe => write!(f, "{}: kprobe ({})", self.function, self.reason),
            ProbeState::Fentry => write!(f, "{}: fentry{} ({})", self.function, ret(" + fexit"), self.reason),
            ProbeState::NotPresent | ProbeState::Unavailable => {
                write!(f, "{}: not traced: {}", self.function, self.reason)
            }
        }
    }
}

/// The datapath family: what each function's probe became.
#[derive(Debug, Default)]
pub struct Datapath {
    pub status: Vec<ProbeStatus>,
    /// Probe `skb_clone` too (journeys on): clones of followed packets are linked to them.
    clones: bool,
}

/// The first kernel whose unwinder walks through a kretprobe's trampoline (5.15: "x86/unwind:
/// Recover kretprobe trampoline entry").
const RETURNS_KEEP_STACKS: (u32, u32) = (5, 15);

/// `skb_clone` as a probed function: its entry takes the parent skb (argument 0).
const CLONE: DatapathFunc = DatapathFunc { name: CLONE_FUNC, skb_arg: 0, skb_arg_is_pptr: false, module: "" };

impl Datapath {
    /// The family when `--datapath` asks for it (nothing to plan: the functions are fixed);
    /// with `journeys`, `skb_clone` is probed as well, to link clones to their parents.
    pub fn plan(journeys: bool) -> Datapath {
        Datapath { status: Vec::new(), clones: journeys }
    }
}

impl Family for Datapath {
    fn name(&self) -> &'static str {
        "datapath"
    }

    fn configure(&mut self, _ebpf: &mut Ebpf) -> Result<(), TraceError> {
        Ok(())
    }

    fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        env: &AttachEnv<'_>,
        catalog: &mut Catalog,
    ) -> Result<(), TraceError> {
        let kallsyms =
            env.kallsyms.ok_or(TraceError::Internal("the datapath probes need the kernel's symbols"))?;
        let kprobes = Path::new("/sys/bus/event_source/devices/kprobe/type").exists();
        // Parsed only if a probe falls back to fentry (the parse costs tens of MiB and ~0.1 s).
        let mut btf: Option<Option<Btf>> = None;
        let clone = self.clones.then_some((CLONE_INDEX, &CLONE));
        for (i, f) in DATAPATH_FUNCS.iter().enumerate().map(|(i, f)| (i as u32, f)).chain(clone) {
            let mut status = attach_one(ebpf, f, kprobes, kallsyms, &mut btf);
            let (label, ret_label) = match status.state {
                ProbeState::Kprobe => ("kprobe", "kretprobe"),
                ProbeState::Fentry => ("fentry", "fexit"),
                _ => ("", ""),
            };
            if !label.is_empty() {
                // skb_clone's entry sends nothing: its return links the clone.
                if i != CLONE_INDEX {
                    catalog.insert(PROBE_BASE + i, &format!("{label}:{}", f.name));
                }
                attach_return(ebpf, i, &mut status, btf.as_ref().and_then(Option::as_ref));
                if status.returns {
                    catalog.insert(RET_BASE + i, &format!("{ret_label}:{}", f.name));
                }
            }
            self.status.push(status);
        }
        Ok(())
    }

    fn programs(&self) -> Vec<AttachedProgram> {
        let mut out = Vec::new();
        for p in &self.status {
            let twins = match p.state {
                ProbeState::Kprobe => [("kp", "kprobe"), ("kr", "kretprobe")],
                ProbeState::Fentry => [("fe", "fentry"), ("fx", "fexit")],
                _ => continue,
            };
            for (i, (prefix, label)) in twins.into_iter().enumerate() {
                if i == 0 || p.returns {
                    out.push(AttachedProgram {
                        label: format!("{label}:{}", p.function),
                        program: format!("{prefix}_{}", p.function),
                        emits: i == 1 || p.function != CLONE_FUNC,
                    });
                }
            }
        }
        out
    }
}

/// One function: kprobe, else fentry, else why not.
fn attach_one(
    ebpf: &mut Ebpf,
    f: &DatapathFunc,
    kprobes: bool,
    kallsyms: &Kallsyms,
    btf: &mut Option<Option<Btf>>,
) -> ProbeStatus {
    let status = |state, reason| ProbeStatus { function: f.name, state, reason, returns: false };
    if kallsyms.address_of(f.name).is_none() {
        let reason = if f.module.is_empty() {
            "not in the running kernel".to_owned()
        } else {
            format!("not in the running kernel (module {} not loaded or not built)", f.module)
        };
        return status(ProbeState::NotPresent, reason);
    }
    let kprobe_err = if kprobes {
        match attach_kprobe(ebpf, "kp", f.name) {
            Ok(()) => return status(ProbeState::Kprobe, String::new()),
            Err(e) => format!("kprobe failed: {e}"),
        }
    } else {
        "kprobes not supported by this kernel".to_owned()
    };
    let fentry_err = match btf.get_or_insert_with(|| Btf::from_sys_fs().ok()).as_ref() {
        None => "fentry needs kernel BTF".to_owned(),
        Some(btf) => match attach_fentry(ebpf, f.name, btf) {
            Ok(()) => return status(ProbeState::Fentry, kprobe_err),
            Err(e) => e,
        },
    };
    status(ProbeState::Unavailable, format!("{kprobe_err}; {fentry_err}"))
}

/// The return twin of an attached entry probe (kretprobe after a kprobe, fexit after an
/// fentry); once it is attached, `DP_RETURNS[index]` tells the entry to push for it. A twin
/// that cannot attach leaves the entry alone and says why in the status.
fn attach_return(ebpf: &mut Ebpf, index: u32, status: &mut ProbeStatus, btf: Option<&Btf>) {
    let function = status.function;
    // Before 5.15 the kernel's unwinder stops at a kretprobe's trampoline: every stack walked
    // inside the function (netif_rx inside veth_xmit) would lose the function and its callers
    // (seen on 5.10). skb_clone's return is harmless: nothing is traced inside skb_clone.
    if index != CLONE_INDEX && crate::kernel::version().is_some_and(|v| v < RETURNS_KEEP_STACKS) {
        status.reason = "no duration: return probes cut kernel stacks before Linux 5.15".to_owned();
        return;
    }
    let attached = match status.state {
        ProbeState::Kprobe => attach_kprobe(ebpf, "kr", function),
        ProbeState::Fentry => match btf {
            Some(btf) => attach_fexit(ebpf, function, btf),
            None => Err("fexit needs kernel BTF".to_owned()),
        },
        _ => return,
    };
    let enabled = attached.and_then(|()| {
        let mut returns: Array<_, u32> = ebpf
            .map_mut("DP_RETURNS")
            .ok_or("map DP_RETURNS missing")?
            .try_into()
            .map_err(|e: aya::maps::MapError| e.to_string())?;
        returns.set(index, 1, 0).map_err(|e| e.to_string())
    });
    match enabled {
        Ok(()) => status.returns = true,
        Err(e) if status.reason.is_empty() => status.reason = format!("no duration: {e}"),
        Err(e) => status.reason = format!("{}; no duration: {e}", status.reason),
    }
}

fn attach_kprobe(ebpf: &mut Ebpf, prefix: &str, function: &str) -> Result<(), String> {
    let name = format!("{prefix}_{function}");
    let prog: &mut KProbe = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: ProgramError| short(&e))?;
    prog.load().map_err(|e| short(&e))?;
    prog.attach(function, 0).map(|_| ()).map_err(|e| short(&e))
}

fn attach_fentry(ebpf: &mut Ebpf, function: &str, btf: &Btf) -> Result<(), String> {
    let name = format!("fe_{function}");
    let prog: &mut FEntry = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: ProgramError| short(&e))?;
    let fentry_msg = |e: &ProgramError| {
        if is_eperm(e) {
            "fentry not permitted".to_owned()
        } else {
            format!("fentry failed: {}", short(e))
        }
    };
    prog.load(function, btf).map_err(|e| fentry_msg(&e))?;
    prog.attach().map(|_| ()).map_err(|e| fentry_msg(&e))
}

fn attach_fexit(ebpf: &mut Ebpf, function: &str, btf: &Btf) -> Result<(), String> {
    let name = format!("fx_{function}");
    let prog: &mut FExit = ebpf
        .program_mut(&name)
        .ok_or_else(|| format!("program {name} missing"))?
        .try_into()
        .map_err(|e: ProgramError| short(&e))?;
    prog.load(function, btf).map_err(|e| short(&e))?;
    prog.attach().map(|_| ()).map_err(|e| short(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = ProbeStatus {
            function: "veth_xmit",
            state: ProbeState::Kprobe,
            reason: String::new(),
            returns: true,
        };
        assert_eq!(s.to_string(), "veth_xmit: kprobe + kretprobe");
        assert!(s.attached());
        let d = Datapath { status: vec![s.clone()], clones: false };
        let names: Vec<_> = d.programs().into_iter().map(|p| (p.program, p.label)).collect();
        assert_eq!(
            names,
            [
                ("kp_veth_xmit".to_owned(), "kprobe:veth_xmit".to_owned()),
                ("kr_veth_xmit".to_owned(), "kretprobe:veth_xmit".to_owned())
            ]
        );
        let s = ProbeStatus { returns: false, reason: "no duration: busy".into(), ..s };
        assert_eq!(s.to_string(), "veth_xmit: kprobe (no duration: busy)");
        let s = ProbeStatus {
            function: "x",
            state: ProbeState::NotPresent,
            reason: "gone".into(),
            returns: false,
        };
        assert_eq!(s.to_string(), "x: not traced: gone");
        assert!(!s.attached());
        let d = Datapath { status: vec![ProbeStatus { state: ProbeState::Fentry, ..s }], clones: false };
        assert_eq!(d.programs()[0].program, "fe_x");
        assert_eq!(d.programs().len(), 1);
    }
}
