//! Kernel symbolization from `/proc/kallsyms`: turns the instruction addresses of kernel
//! stacks into `function+offset [module]`.
//!
//! Only text symbols are kept (types `t`, `T`, `w`, `W`), sorted by address, one per address,
//! with every name in a single string arena: the file has ~100-200k lines and the table lives
//! as long as the tracer.

use std::path::Path;

/// Where the kernel lists its symbols.
pub const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// Errors from reading or parsing kallsyms. Each displays as one line fit to show to users.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Every address reads as 0.
    #[error("kernel addresses are hidden in /proc/kallsyms (run as root, or lower kernel.kptr_restrict)")]
    AddressesHidden,
    /// A line that is not `ADDRESS TYPE NAME [MODULE]`.
    #[error("malformed kallsyms line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// No text symbol at all.
    #[error("kallsyms lists no kernel text symbols")]
    NoTextSymbols,
}

/// A resolved address: `name+offset`, in `module` unless built in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The function (text symbol) containing the address.
    pub name: &'a str,
    /// Distance from the start of the symbol.
    pub offset: u64,
    /// The module (`veth`), or `None` for the core kernel.
    pub module: Option<&'a str>,
}

impl std::fmt::Display for Symbol<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{:#x}", self.name, self.offset)?;
        if let Some(m) = self.module {
            write!(f, " [{m}]")?;
        }
        Ok(())
    }
}

const NO_MODULE: u16 = u16::MAX;

/// One text symbol; its name is `names[name_off..name_off + name_len]`. 16 bytes.
#[derive(Clone, Copy, Debug)]
struct Entry {
    addr: u64,
    name_off: u32,
    name_len: u16,
    /// Index into `modules`, or `NO_MODULE`.
    module: u16,
}

/// The kernel's text symbols, sorted by address.
pub struct Kallsyms {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<Box<str>>,
}

impl std::fmt::Debug for Kallsyms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kallsyms")
            .field("symbols", &self.entries.len())
            .field("modules", &self.modules.len())
            .finish()
    }
}

/// Preference among symbols sharing an address: global before weak before local.
fn rank(kind: u8) -> Option<u8> {
    match kind {
        b'T' => Some(0),
        b'W' => Some(1),
        b't' => Some(2),
        b'w' => Some(3),
        _ => None,
    }
}

impl Kallsyms {
    /// Reads and parses [`PROC_KALLSYMS`].
    pub fn load() -> Result<Self, KallsymsError> {
        Self::load_from(Path::new(PROC_KALLSYMS))
    }

    /// Reads and parses a kallsyms-format file.
    /// Line by line: the text (several MiB) is never held whole.
    pub fn load_from(path: &Path) -> Result<Self, KallsymsError> {
        use std::io::BufRead as _;
        let io = |source| KallsymsError::Io { path: path.display().to_string(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut read_error = None;
        let lines = std::io::BufReader::with_capacity(1 << 16, file).lines().map_while(|l| match l {
            Ok(l) => Some(l),
            Err(e) => {
                read_error = Some(e);
                None
            }
        });
        let parsed = Self::parse_lines(lines);
        match read_error {
            Some(e) => Err(io(e)),
            None => parsed,
        }
    }

    /// Parses kallsyms text: lines of `ffffffff81e5f000 T netif_rx` or
    /// `ffffffffc0a01000 t veth_xmit\t[veth]`.
    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        Self::parse_lines(text.lines())
    }

    fn parse_lines<S: AsRef<str>>(text: impl Iterator<Item = S>) -> Result<Self, KallsymsError> {
        let mut ranked: Vec<(Entry, u8)> = Vec::new();
        let mut names = String::new();
        let mut modules: Vec<Box<str>> = Vec::new();
        let mut any_address = false;
        let mut lines = 0usize;
        for (i, line) in text.enumerate() {
            let line = line.as_ref();
            let malformed = |reason: String| KallsymsError::Malformed { line: i + 1, reason };
            let mut parts = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
                if line.trim().is_empty() {
                    continue;
                }
                return Err(malformed(format!("expected `ADDRESS TYPE NAME`, found `{line}`")));
            };
            let module = parts.next();
            if parts.next().is_some() {
                return Err(malformed(format!("trailing text in `{line}`")));
            }
            lines += 1;
            let addr =
                u64::from_str_radix(addr, 16).map_err(|_| malformed(format!("bad address `{addr}`")))?;
            any_address |= addr != 0;
            let kind = match kind.as_bytes() {
                [k] => *k,
                _ => return Err(malformed(format!("bad symbol type `{kind}`"))),
            };
            let Some(rank) = rank(kind) else { continue };
            let module = match module {
                None => NO_MODULE,
                Some(m) => {
                    let m = m
                        .strip_prefix('[')
                        .and_then(|m| m.strip_suffix(']'))
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| malformed(format!("bad module `{m}`")))?;
                    match modules.iter().position(|known| &**known == m) {
                        Some(idx) => idx as u16,
                        None if modules.len() < usize::from(NO_MODULE) => {
                            modules.push(m.into());
                            (modules.len() - 1) as u16
                        }
                        None => return Err(malformed("too many modules".to_string())),
                    }
                }
            };
            let name_len = u16::try_from(name.len()).map_err(|_| malformed("symbol name too long".into()))?;
            let name_off = u32::try_from(names.len()).map_err(|_| malformed("too many symbols".into()))?;
            names.push_str(name);
            ranked.push((Entry { addr, name_off, name_len, module }, rank));
        }
        if lines > 0 && !any_address {
            return Err(KallsymsError::AddressesHidden);
        }
        if ranked.is_empty() {
            return Err(KallsymsError::NoTextSymbols);
        }
        // Stable: among equally ranked names at one address the first listed wins.
        ranked.sort_by_key(|(e, r)| (e.addr, *r));
        ranked.dedup_by_key(|(e, _)| e.addr);
        let entries = ranked.into_iter().map(|(e, _)| e).collect();
        // Names of dropped duplicates stay in the arena; they are few (a few hundred).
        names.shrink_to_fit();
        Ok(Kallsyms { entries, names, modules })
    }

    /// Number of distinct text symbol addresses.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false for a parsed table (parsing fails without text symbols).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn symbol(&self, e: &Entry, addr: u64) -> Symbol<'_> {
        let start = e.name_off as usize;
        Symbol {
            name: self.names.get(start..start + usize::from(e.name_len)).unwrap_or_default(),
            offset: addr - e.addr,
            module: self.modules.get(usize::from(e.module)).map(|m| &**m),
        }
    }

    /// The text symbol with the greatest address `<= addr` (None before the first one).
    /// Allocation-free binary search.
    pub fn resolve(&self, addr: u64) -> Option<Symbol<'_>> {
        let idx = self.entries.partition_point(|e| e.addr <= addr);
        let e = self.entries.get(idx.checked_sub(1)?)?;
        Some(self.symbol(e, addr))
    }

    /// Address of the text symbol called `name` (linear scan: for setup and tests).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries.iter().find(|&e| self.symbol(e, e.addr).name == name).map(|e| e.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _text
ffffffff81000000 t startup_64
ffffffff81000100 D some_data
ffffffff81e5eff0 T __pfx_netif_rx
ffffffff81e5f000 t local_alias
ffffffff81e5f000 T netif_rx
ffffffff81e5f200 W weak_fn
ffffffff81e5f300 t local_fn
ffffffff82000000 r rodata_sym
ffffffffc0a01000 t veth_xmit\t[veth]
ffffffffc0a01400 T veth_open\t[veth]
ffffffffc0b00000 t br_dev_xmit\t[bridge]
";

    #[test]
    fn resolves_core_and_module_symbols() {
        let k = Kallsyms::parse(SAMPLE).expect("parse");
        assert_eq!(k.len(), 8);
        assert!(!k.is_empty());
        let s = k.resolve(0xffffffff81e5f000).expect("netif_rx");
        assert_eq!(s, Symbol { name: "netif_rx", offset: 0, module: None });
        let s = k.resolve(0xffffffff81e5f0a4).expect("netif_rx+0xa4");
        assert_eq!((s.name, s.offset), ("netif_rx", 0xa4));
        assert_eq!(s.to_string(), "netif_rx+0xa4");
        assert_eq!(k.resolve(0xffffffff81e5eff8).expect("pfx").name, "__pfx_netif_rx");
        assert_eq!(k.resolve(0xffffffff81e5f210).expect("weak").name, "weak_fn");
        // Data symbols are not kept: the address resolves to the preceding text symbol.
        assert_eq!(k.resolve(0xffffffff81000104).expect("text").name, "_text");
        let s = k.resolve(0xffffffffc0a01010).expect("veth_xmit");
        assert_eq!(s, Symbol { name: "veth_xmit", offset: 0x10, module: Some("veth") });
        assert_eq!(s.to_string(), "veth_xmit+0x10 [veth]");
        let s = k.resolve(0xffffffffc0a01400).expect("veth_open");
        assert_eq!((s.name, s.module), ("veth_open", Some("veth")));
        let s = k.resolve(0xffffffffc0b00001).expect("bridge");
        assert_eq!((s.name, s.module), ("br_dev_xmit", Some("bridge")));
        assert_eq!(k.resolve(u64::MAX).expect("last").name, "br_dev_xmit");
    }

    #[test]
    fn before_first_symbol_is_none() {
        let k = Kallsyms::parse(SAMPLE).expect("parse");
        assert!(k.resolve(0).is_none());
        assert!(k.resolve(0xffffffff80ffffff).is_none());
        assert_eq!(k.resolve(0xffffffff81000000).expect("first").name, "_text");
    }

    #[test]
    fn duplicate_addresses_prefer_global_names() {
        let k = Kallsyms::parse(SAMPLE).expect("parse");
        // `_text` (T) wins over `startup_64` (t) although listed first anyway; `netif_rx` (T)
        // wins over `local_alias` (t) listed before it.
        assert_eq!(k.resolve(0xffffffff81000000).expect("x").name, "_text");
        assert_eq!(k.resolve(0xffffffff81e5f000).expect("x").name, "netif_rx");
        let k = Kallsyms::parse("1000 w weak_local\n1000 W weak_global\n1000 t local\n").expect("parse");
        assert_eq!(k.resolve(0x1000).expect("x").name, "weak_global");
        let k = Kallsyms::parse("1000 t first\n1000 t second\n").expect("parse");
        assert_eq!(k.resolve(0x1000).expect("x").name, "first");
        assert_eq!(k.address_of("second"), None);
        assert_eq!(k.address_of("first"), Some(0x1000));
    }

    #[test]
    fn hidden_addresses_and_malformed_lines() {
        let hidden = "0000000000000000 T _text\n0000000000000000 t veth_xmit\t[veth]\n";
        let e = Kallsyms::parse(hidden).expect_err("hidden");
        assert!(matches!(e, KallsymsError::AddressesHidden), "{e:?}");
        assert!(e.to_string().contains("kptr_restrict"));
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::NoTextSymbols)));
        assert!(matches!(Kallsyms::parse("1000 D data\n"), Err(KallsymsError::NoTextSymbols)));
        for bad in [
            "zzzz T x\n",
            "1000 T\n",
            "1000\n",
            "1000 TT x\n",
            "1000 T x [mod] extra\n",
            "1000 t x mod\n",
            "1000 t x []\n",
            "10000000000000000000 T x\n",
        ] {
            let e = Kallsyms::parse(bad).expect_err(bad);
            assert!(matches!(e, KallsymsError::Malformed { line: 1, .. }), "{bad:?}: {e:?}");
            assert!(!e.to_string().contains('\n'));
        }
        // Blank lines are ignored.
        assert_eq!(Kallsyms::parse("\n1000 T x\n\n").expect("blank").len(), 1);
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(size_of::<Entry>(), 16);
    }

    #[test]
    fn real_kallsyms_resolves_netif_rx() {
        let k = match Kallsyms::load() {
            Ok(k) => k,
            Err(e) => {
                eprintln!("skipping: {e}");
                return;
            }
        };
        let addr = k.address_of("netif_rx").expect("netif_rx in /proc/kallsyms");
        let s = k.resolve(addr).expect("resolve");
        assert_eq!((s.name, s.offset, s.module), ("netif_rx", 0, None));
        assert_eq!(k.resolve(addr + 4).expect("resolve+4").name, "netif_rx");
        assert!(k.len() > 10_000, "only {} text symbols", k.len());
    }
}
