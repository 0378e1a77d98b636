//! Tracepoints as tracefs describes them: the list under `events/` and each event's `format`
//! file (record id and field layout), which the generic tracepoint program needs to read
//! `skbaddr`, `len` and `name` at the right offsets.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where tracefs is mounted on current kernels.
pub const TRACEFS: &str = "/sys/kernel/tracing";
/// Where tracefs shows up on older setups (through debugfs).
pub const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Errors from reading tracefs. Each displays as one line fit to show to users.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// Neither [`TRACEFS`] nor [`DEBUGFS_TRACING`] holds an `events` directory.
    #[error(
        "tracefs is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` \
         (or `cargo xtask setup`)"
    )]
    NotMounted,
    /// tracefs exists but this process may not read it.
    #[error("cannot access {}: permission denied (run dockertrace as root)", path.display())]
    PermissionDenied {
        /// The path that could not be read.
        path: PathBuf,
    },
    /// The tracepoint has no `format` file.
    #[error("tracepoint `{tp}` does not exist on this kernel (no {})", path.display())]
    UnknownTracepoint {
        /// The tracepoint asked for.
        tp: TracepointId,
        /// The `format` file that is missing.
        path: PathBuf,
    },
    /// Any other I/O error.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A `format` file that does not follow the tracefs syntax.
    #[error("malformed tracepoint format {what}: line {line}: {reason}")]
    Format {
        /// The file (or `<text>` when parsed from a string).
        what: String,
        /// 1-based line number (0 when the whole file is at fault).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

impl TracefsError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::PermissionDenied {
            TracefsError::PermissionDenied { path: path.to_path_buf() }
        } else {
            TracefsError::Io { path: path.to_path_buf(), source }
        }
    }
}

/// A tracepoint name, `category:name` (e.g. `net:net_dev_xmit`). Orders by category, then name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TracepointId {
    /// The subsystem directory under `events/` (`net`, `skb`, …).
    pub category: String,
    /// The event directory (`net_dev_xmit`).
    pub name: String,
}

impl TracepointId {
    /// Builds an id from its two parts.
    pub fn new(category: impl Into<String>, name: impl Into<String>) -> Self {
        TracepointId { category: category.into(), name: name.into() }
    }
}

impl fmt::Display for TracepointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.category, self.name)
    }
}

/// A mounted tracefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracefs {
    root: PathBuf,
}

impl Tracefs {
    /// Finds the mounted tracefs: [`TRACEFS`] if it has an `events` directory, else
    /// [`DEBUGFS_TRACING`].
    pub fn locate() -> Result<Tracefs, TracefsError> {
        let mut denied = None;
        for root in [TRACEFS, DEBUGFS_TRACING] {
            let events = Path::new(root).join("events");
            match std::fs::metadata(&events) {
                Ok(m) if m.is_dir() => return Ok(Tracefs::at(root)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    denied.get_or_insert(events);
                }
                Err(_) => {}
            }
        }
        match denied {
            Some(path) => Err(TracefsError::PermissionDenied { path }),
            None => Err(TracefsError::NotMounted),
        }
    }

    /// A tracefs rooted at `root` (the directory that holds `events/`); not checked.
    pub fn at(root: impl Into<PathBuf>) -> Tracefs {
        Tracefs { root: root.into() }
    }

    /// The directory that holds `events/`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every tracepoint under `events/` that has a `format` file, sorted.
    pub fn events(&self) -> Result<Vec<TracepointId>, TracefsError> {
        let events = self.root.join("events");
        let mut out = Vec::new();
        for category in read_dir_names(&events)? {
            let dir = events.join(&category);
            if !dir.is_dir() {
                continue; // `enable`, `header_page`, …
            }
            for name in read_dir_names(&dir)? {
                if dir.join(&name).join("format").is_file() {
                    out.push(TracepointId::new(category.clone(), name));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Path of a tracepoint's `format` file.
    pub fn format_path(&self, tp: &TracepointId) -> PathBuf {
        self.root.join("events").join(&tp.category).join(&tp.name).join("format")
    }

    /// Reads and parses `events/CATEGORY/NAME/format`.
    pub fn format(&self, tp: &TracepointId) -> Result<TpFormat, TracefsError> {
        let path = self.format_path(tp);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(TracefsError::UnknownTracepoint { tp: tp.clone(), path })
            }
            Err(e) => return Err(TracefsError::io(&path, e)),
        };
        TpFormat::parse(&text).map_err(|e| match e {
            TracefsError::Format { line, reason, .. } => {
                TracefsError::Format { what: path.display().to_string(), line, reason }
            }
            other => other,
        })
    }
}

/// Names of the entries of `dir` (non-UTF-8 names are skipped: no tracepoint has one).
fn read_dir_names(dir: &Path) -> Result<Vec<String>, TracefsError> {
    let entries = std::fs::read_dir(dir).map_err(|e| TracefsError::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| TracefsError::io(dir, e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

/// One field of a tracepoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpField {
    /// Field name (`skbaddr`), without any array suffix.
    pub name: String,
    /// C type as tracefs spells it, array suffix included: `void *`, `unsigned char[6]`,
    /// `__data_loc char[]`.
    pub c_type: String,
    /// Byte offset in the record (the record starts with the `common_*` fields).
    pub offset: u32,
    /// Size in bytes (4 for a `__data_loc` field: the u32 `offset | len << 16`).
    pub size: u32,
    /// Whether the type is signed.
    pub signed: bool,
}

impl TpField {
    /// A dynamic-length field: the record holds a u32 (`len << 16 | offset`) pointing at the
    /// data (e.g. the device name of `net:net_dev_xmit`).
    pub fn is_data_loc(&self) -> bool {
        self.c_type.starts_with("__data_loc")
    }
}

/// A parsed tracepoint `format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpFormat {
    /// The tracepoint id (`common_type` of its records).
    pub id: u32,
    /// The event name (`net_dev_xmit`).
    pub name: String,
    /// All fields in file order, `common_*` fields included.
    pub fields: Vec<TpField>,
}

impl TpFormat {
    /// Parses the text of a tracefs `format` file:
    ///
    /// ```text
    /// name: net_dev_queue
    /// ID: 2304
    /// format:
    ///     field:unsigned short common_type;    offset:0;    size:2;    signed:0;
    ///     field:void * skbaddr;    offset:8;    size:8;    signed:0;
    ///     field:__data_loc char[] name;    offset:20;    size:4;    signed:0;
    ///
    /// print fmt: "dev=%s skbaddr=%p len=%u", __get_str(name), REC->skbaddr, REC->len
    /// ```
    ///
    /// Parsing stops at `print fmt:` (which may span several lines).
    pub fn parse(text: &str) -> Result<TpFormat, TracefsError> {
        let err =
            |line: usize, reason: String| TracefsError::Format { what: "<text>".to_string(), line, reason };
        let mut id = None;
        let mut name = None;
        let mut fields = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let lineno = i + 1;
            let line = raw.trim();
            if line.starts_with("print fmt:") {
                break;
            }
            if let Some(v) = line.strip_prefix("ID:") {
                let v = v.trim();
                id = Some(v.parse::<u32>().map_err(|_| err(lineno, format!("bad ID `{v}`")))?);
            } else if let Some(v) = line.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if line.starts_with("field:") || line.starts_with("field special:") {
                fields.push(parse_field(line).map_err(|reason| err(lineno, reason))?);
            }
            // Anything else (`format:`, blank lines, future additions) carries no layout.
        }
        let id = id.ok_or_else(|| err(0, "no `ID:` line".to_string()))?;
        let name = name.filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| err(0, "no `name:` line".to_string()))?;
        if fields.is_empty() {
            return Err(err(0, "no `field:` lines".to_string()));
        }
        Ok(TpFormat { id, name, fields })
    }

    /// The field called `name`, if any.
    pub fn field(&self, name: &str) -> Option<&TpField> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Parses `field:TYPE NAME;\toffset:N;\tsize:N;\tsigned:N;`.
fn parse_field(line: &str) -> Result<TpField, String> {
    let mut parts = line.split(';').map(str::trim).filter(|p| !p.is_empty());
    let decl = parts.next().unwrap_or_default();
    let decl = decl.split_once(':').map(|(_, d)| d.trim()).unwrap_or_default();
    let (c_type, name) = split_decl(decl).ok_or_else(|| format!("bad field declaration `{decl}`"))?;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in parts {
        let (key, value) =
            part.split_once(':').ok_or_else(|| format!("expected `key:value`, found `{part}`"))?;
        let value = value.trim();
        let number = || value.parse::<u32>().map_err(|_| format!("bad {key} `{value}`"));
        match key.trim() {
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            _ => {} // unknown attributes carry no layout
        }
    }
    Ok(TpField {
        name,
        c_type,
        offset: offset.ok_or_else(|| format!("field `{decl}` has no offset"))?,
        size: size.ok_or_else(|| format!("field `{decl}` has no size"))?,
        signed,
    })
}

/// Splits a C declaration into (type, name): `unsigned char dest[6]` → (`unsigned char[6]`,
/// `dest`), `void * skbaddr` → (`void *`, `skbaddr`).
fn split_decl(decl: &str) -> Option<(String, String)> {
    // Trailing array suffix (`[6]`, `[2][3]`, `[]`) belongs to the type.
    let mut head = decl.trim_end();
    while head.ends_with(']') {
        head = head[..head.rfind('[')?].trim_end();
    }
    let suffix = decl[head.len()..].trim();
    let head = head.trim_end();
    let start = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    let name = &head[start..];
    let ty = head[..start].trim();
    if name.is_empty() || ty.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((format!("{ty}{suffix}"), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV_QUEUE: &str = include_str!("../../tests/fixtures/kernel/net_net_dev_queue.format");
    const NET_DEV_XMIT: &str = include_str!("../../tests/fixtures/kernel/net_net_dev_xmit.format");
    const RX_ENTRY: &str = include_str!("../../tests/fixtures/kernel/net_netif_receive_skb_entry.format");
    const RX_EXIT: &str = include_str!("../../tests/fixtures/kernel/net_netif_receive_skb_exit.format");
    const START_XMIT: &str = include_str!("../../tests/fixtures/kernel/net_net_dev_start_xmit.format");
    const KFREE_SKB: &str = include_str!("../../tests/fixtures/kernel/skb_kfree_skb.format");

    fn field<'a>(f: &'a TpFormat, name: &str) -> &'a TpField {
        f.field(name).unwrap_or_else(|| panic!("{} has no field {name}", f.name))
    }

    fn check_common(f: &TpFormat) {
        let names: Vec<_> = f.fields.iter().take(4).map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["common_type", "common_flags", "common_preempt_count", "common_pid"]);
        let ty = field(f, "common_type");
        assert_eq!((ty.c_type.as_str(), ty.offset, ty.size, ty.signed), ("unsigned short", 0, 2, false));
        let pid = field(f, "common_pid");
        assert_eq!((pid.c_type.as_str(), pid.offset, pid.size, pid.signed), ("int", 4, 4, true));
    }

    #[test]
    fn parses_net_dev_queue() {
        let f = TpFormat::parse(NET_DEV_QUEUE).expect("parse");
        assert_eq!(f.name, "net_dev_queue");
        assert!(f.id > 0);
        check_common(&f);
        assert_eq!(f.fields.len(), 7);
        let skb = field(&f, "skbaddr");
        assert_eq!((skb.c_type.as_str(), skb.offset, skb.size), ("void *", 8, 8));
        let len = field(&f, "len");
        assert_eq!((len.c_type.as_str(), len.offset, len.size, len.signed), ("unsigned int", 16, 4, false));
        let name = field(&f, "name");
        assert_eq!((name.c_type.as_str(), name.offset, name.size), ("__data_loc char[]", 20, 4));
        assert!(name.is_data_loc());
        assert!(!skb.is_data_loc());
    }

    #[test]
    fn parses_net_dev_xmit() {
        let f = TpFormat::parse(NET_DEV_XMIT).expect("parse");
        assert_eq!(f.name, "net_dev_xmit");
        check_common(&f);
        assert_eq!(field(&f, "skbaddr").offset, 8);
        assert_eq!(field(&f, "len").offset, 16);
        let rc = field(&f, "rc");
        assert_eq!((rc.offset, rc.size, rc.signed), (20, 4, true));
        assert!(field(&f, "name").is_data_loc());
        assert_eq!(field(&f, "name").offset, 24);
    }

    #[test]
    fn parses_netif_receive_skb_entry_and_exit() {
        let f = TpFormat::parse(RX_ENTRY).expect("parse entry");
        assert_eq!(f.name, "netif_receive_skb_entry");
        check_common(&f);
        assert!(field(&f, "name").is_data_loc());
        assert_eq!(field(&f, "skbaddr").c_type, "const void *");
        assert_eq!(field(&f, "skbaddr").size, 8);
        assert_eq!(field(&f, "vlan_tagged").c_type, "bool");
        assert_eq!(field(&f, "len").size, 4);
        assert!(f.field("rc").is_none());

        let f = TpFormat::parse(RX_EXIT).expect("parse exit");
        assert_eq!(f.name, "netif_receive_skb_exit");
        check_common(&f);
        assert_eq!(f.fields.len(), 5);
        assert!(f.field("skbaddr").is_none());
        assert!(field(&f, "ret").signed);
    }

    #[test]
    fn parses_start_xmit_and_kfree_skb() {
        let f = TpFormat::parse(START_XMIT).expect("parse");
        assert_eq!(f.name, "net_dev_start_xmit");
        assert_eq!(field(&f, "protocol").c_type, "u16");
        let f = TpFormat::parse(KFREE_SKB).expect("parse");
        assert_eq!(f.name, "kfree_skb");
        assert_eq!(field(&f, "skbaddr").offset, 8);
        assert_eq!(field(&f, "reason").c_type, "enum skb_drop_reason");
        assert!(f.field("len").is_none());
        assert!(f.field("name").is_none());
    }

    #[test]
    fn parses_arrays_and_multiline_print_fmt() {
        let text = "name: arr\nID: 7\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\
            \tfield:unsigned char dest[6];\toffset:8;\tsize:6;\tsigned:0;\n\
            \tfield:u32 grid[2][3];\toffset:16;\tsize:24;\tsigned:0;\n\
            \tfield:unsigned long args[];\toffset:40;\tsize:0;\tsigned:0;\n\
            \tfield special:struct foo * p;\toffset:40;\tsize:8;\tsigned:0;\n\n\
            print fmt: \"%d\", REC->x\n\tfield:int bogus;\toffset:nope;\n";
        let f = TpFormat::parse(text).expect("parse");
        assert_eq!(f.id, 7);
        let dest = field(&f, "dest");
        assert_eq!((dest.c_type.as_str(), dest.offset, dest.size), ("unsigned char[6]", 8, 6));
        assert_eq!(field(&f, "grid").c_type, "u32[2][3]");
        assert_eq!(field(&f, "args").c_type, "unsigned long[]");
        assert_eq!(field(&f, "p").c_type, "struct foo *");
        assert_eq!(f.fields.len(), 5);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases = [
            "",
            "garbage",
            "name: x\nformat:\n\tfield:int a;\toffset:0;\tsize:4;\tsigned:1;\n",
            "name: x\nID: abc\n",
            "name: x\nID: 1\nformat:\n",
            "name: x\nID: 1\n\tfield:int a;\toffset:zero;\tsize:4;\n",
            "name: x\nID: 1\n\tfield:int a;\tsize:4;\n",
            "name: x\nID: 1\n\tfield:int a;\toffset:0;\n",
            "name: x\nID: 1\n\tfield:a;\toffset:0;\tsize:4;\n",
            "name: x\nID: 1\n\tfield:;\n",
            "name: x\nID: 1\n\tfield:int a;\toffset 0;\tsize:4;\n",
            "name: x\nID: -1\n",
            "ID: 1\n\tfield:int a;\toffset:0;\tsize:4;\n",
            "name: x\nID: 1\n\tfield:int [3];\toffset:0;\tsize:4;\n",
        ];
        for text in cases {
            match TpFormat::parse(text) {
                Err(e @ TracefsError::Format { .. }) => {
                    let msg = e.to_string();
                    assert!(!msg.contains('\n'), "multi-line error {msg:?}");
                }
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        // Truncations of real files never panic.
        for end in 0..NET_DEV_XMIT.len() {
            if NET_DEV_XMIT.is_char_boundary(end) {
                let _ = TpFormat::parse(&NET_DEV_XMIT[..end]);
            }
        }
    }

    #[test]
    fn tracepoint_id_display_and_order() {
        let mut ids = [
            TracepointId::new("skb", "kfree_skb"),
            TracepointId::new("net", "netif_rx"),
            TracepointId::new("net", "net_dev_xmit"),
        ];
        ids.sort();
        let shown: Vec<_> = ids.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["net:net_dev_xmit", "net:netif_rx", "skb:kfree_skb"]);
    }

    #[test]
    fn events_and_format_on_a_fake_tree() {
        let root = std::env::temp_dir().join(format!("dockertrace-tracefs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        write("events/net/net_dev_xmit/format", NET_DEV_XMIT);
        write("events/net/net_dev_queue/format", NET_DEV_QUEUE);
        write("events/net/enable", "0");
        write("events/net/nofmt/enable", "0");
        write("events/skb/kfree_skb/format", KFREE_SKB);
        write("events/enable", "0");
        write("events/header_page", "");
        let fs = Tracefs::at(&root);
        assert_eq!(fs.root(), root.as_path());
        let events = fs.events().expect("events");
        let shown: Vec<_> = events.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["net:net_dev_queue", "net:net_dev_xmit", "skb:kfree_skb"]);
        assert_eq!(fs.format(&events[1]).expect("format").name, "net_dev_xmit");
        let missing = fs.format(&TracepointId::new("net", "nope")).expect_err("missing");
        assert!(matches!(missing, TracefsError::UnknownTracepoint { .. }), "{missing:?}");
        write("events/net/bad/format", "name: bad\nID: x\n");
        let bad = fs.format(&TracepointId::new("net", "bad")).expect_err("bad");
        assert!(bad.to_string().contains("events/net/bad/format: line 2"), "{bad}");
        let _ = std::fs::remove_dir_all(&root);
        let gone = Tracefs::at(&root).events().expect_err("no tree");
        assert!(matches!(gone, TracefsError::Io { .. }), "{gone:?}");
    }

    #[test]
    fn real_tracefs_net_events() {
        let fs = match Tracefs::locate() {
            Ok(fs) => fs,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let events = match fs.events() {
            Ok(ev) => ev,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let xmit = TracepointId::new("net", "net_dev_xmit");
        assert!(events.contains(&xmit), "no net:net_dev_xmit among {} events", events.len());
        let f = fs.format(&xmit).expect("format of net:net_dev_xmit");
        assert!(f.field("skbaddr").is_some_and(|s| s.size == 8));
        for tp in events.iter().filter(|t| t.category == "net" || t.category == "skb") {
            fs.format(tp).unwrap_or_else(|e| panic!("{tp}: {e}"));
        }
    }
}
