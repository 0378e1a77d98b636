//! The datapath family: a kprobe and an fentry twin on each function of
//! `dockertrace_common::datapath::DATAPATH_FUNCS` (veth, bridge, macvlan, ipvlan, loopback
//! transmit paths). Each function gets a kprobe where the kernel has kprobes, else fentry, else
//! a reason the user is shown.
use std::path::Path;

use aya::{
    programs::{FEntry, KProbe, ProgramError},
    Btf, Ebpf,
};
use dockertrace_common::datapath::{DatapathFunc, DATAPATH_FUNCS, PROBE_BASE};

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
}

impl ProbeStatus {
    /// Whether the probe is attached (by kprobe or fentry).
    pub fn attached(&self) -> bool {
        matches!(self.state, ProbeState::Kprobe | ProbeState::Fentry)
    }
}

impl std::fmt::Display for ProbeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.state {
            ProbeState::Kprobe => write!(f, "{}: kprobe", self.function),
            ProbeState::Fentry => write!(f, "{}: fentry ({})", self.function, self.reason),
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
}

impl Datapath {
    /// The family when `--datapath` asks for it (nothing to plan: the functions are fixed).
    pub fn plan() -> Datapath {
        Datapath::default()
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
        for (i, f) in DATAPATH_FUNCS.iter().enumerate() {
            let status = attach_one(ebpf, f, kprobes, kallsyms, &mut btf);
            let label = match status.state {
                ProbeState::Kprobe => "kprobe",
                ProbeState::Fentry => "fentry",
                _ => "",
            };
            if !label.is_empty() {
                catalog.insert(PROBE_BASE + i as u32, &format!("{label}:{}", f.name));
            }
            self.status.push(status);
        }
        Ok(())
    }

    fn programs(&self) -> Vec<AttachedProgram> {
        self.status
            .iter()
            .filter_map(|p| {
                let (prefix, label) = match p.state {
                    ProbeState::Kprobe => ("kp", "kprobe"),
                    ProbeState::Fentry => ("fe", "fentry"),
                    _ => return None,
                };
                Some(AttachedProgram {
                    label: format!("{label}:{}", p.function),
                    program: format!("{prefix}_{}", p.function),
                    emits: true,
                })
            })
            .collect()
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
    let status = |state, reason| ProbeStatus { function: f.name, state, reason };
    if kallsyms.address_of(f.name).is_none() {
        let reason = if f.module.is_empty() {
            "not in the running kernel".to_owned()
        } else {
            format!("not in the running kernel (module {} not loaded or not built)", f.module)
        };
        return status(ProbeState::NotPresent, reason);
    }
    let kprobe_err = if kprobes {
        match attach_kprobe(ebpf, f.name) {
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

fn attach_kprobe(ebpf: &mut Ebpf, function: &str) -> Result<(), String> {
    let name = format!("kp_{function}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        let s = ProbeStatus { function: "veth_xmit", state: ProbeState::Kprobe, reason: String::new() };
        assert_eq!(s.to_string(), "veth_xmit: kprobe");
        assert!(s.attached());
        let s = ProbeStatus { function: "x", state: ProbeState::NotPresent, reason: "gone".into() };
        assert_eq!(s.to_string(), "x: not traced: gone");
        assert!(!s.attached());
        let d = Datapath { status: vec![ProbeStatus { state: ProbeState::Fentry, ..s }] };
        assert_eq!(d.programs()[0].program, "fe_x");
    }
}
