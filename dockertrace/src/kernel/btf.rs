//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF has no CO-RE, so userspace looks up where `sk_buff.dev`, `net_device.ifindex`, …
//! live in this kernel and hands the offsets to the programs ([`KernelBtf::kernel_layout`]).
//! This is a small reader of the BTF format (header, type section, string section); it keeps
//! the raw sections and an index of where each type starts.

use std::path::{Path, PathBuf};

use dockertrace_common::{KernelLayout, NAME_LEN};

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const TYPE_HEADER: usize = 12;
/// Bound on typedef chains and anonymous-member nesting (guards against malformed loops).
const MAX_DEPTH: u32 = 64;
/// Size of a kernel pointer: dockertrace traces the kernel it runs on, which is 64-bit.
const PTR_SIZE: u64 = 8;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors from reading BTF or looking up members. Each displays as one line fit to show to
/// users.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The kernel exposes no BTF.
    #[error(
        "kernel BTF not found at {}: dockertrace needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y",
        path.display()
    )]
    NotFound {
        /// The path that does not exist.
        path: PathBuf,
    },
    /// The BTF file exists but cannot be read.
    #[error("cannot read kernel BTF {}: {source}", path.display())]
    Io {
        /// The BTF file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not valid BTF.
    #[error("malformed BTF: {0}")]
    Malformed(String),
    /// No struct (or union) of that name.
    #[error("kernel BTF has no `struct {0}`")]
    NoStruct(String),
    /// The member path does not exist in the struct.
    #[error("`struct {struct_name}` has no member `{path}` in kernel BTF")]
    NoMember {
        /// The struct searched.
        struct_name: String,
        /// The dotted member path.
        path: String,
    },
    /// A path component other than the last names a member that is not a struct or union.
    #[error("`{struct_name}.{path}`: member `{member}` is not a struct or union")]
    NotAStruct {
        /// The struct searched.
        struct_name: String,
        /// The dotted member path.
        path: String,
        /// The offending component.
        member: String,
    },
    /// The member is a bitfield (or not byte-aligned): it has no byte offset.
    #[error("`{struct_name}.{path}` is a bitfield: dockertrace cannot read it by byte offset")]
    Bitfield {
        /// The struct searched.
        struct_name: String,
        /// The dotted member path.
        path: String,
    },
    /// The member exists but does not have the size the eBPF programs read.
    #[error("`{struct_name}.{path}` is {size} bytes in kernel BTF, dockertrace expects {expected}")]
    UnexpectedSize {
        /// The struct searched.
        struct_name: String,
        /// The dotted member path.
        path: String,
        /// Size in this kernel.
        size: u64,
        /// Size dockertrace reads.
        expected: u64,
    },
    /// `possible_net_t` is empty: network namespaces are compiled out.
    #[error(
        "`net_device.nd_net` has no `net` member: the kernel is built without CONFIG_NET_NS, \
         and dockertrace needs network namespaces to tell containers apart"
    )]
    NoNetNs,
}

/// Where a member lives in its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    /// Byte offset from the start of the outermost struct.
    pub offset: u32,
    /// Size in bytes of the member's type (pointers are 8).
    pub size: u64,
}

/// What a tracepoint argument is, as far as dockertrace cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// `struct sk_buff *`
    Skb,
    /// `struct net_device *`
    NetDevice,
    /// `void *` (`kfree_skb`'s `location`).
    VoidPointer,
    /// `enum skb_drop_reason` (`kfree_skb`'s `reason`, kernels 5.17+).
    DropReason,
    /// Any other pointer.
    Pointer,
    /// An integer of `size` bytes.
    Int {
        size: u32,
        signed: bool,
    },
    Other,
}

/// One argument of a tracepoint's `TP_PROTO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpArg {
    /// The parameter's name, when the BTF keeps it ("" otherwise).
    pub name: String,
    pub kind: ArgKind,
}

/// One type record: the 12-byte `struct btf_type` plus its kind-specific trailing data.
#[derive(Clone, Copy)]
struct Ty<'a> {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` for INT/ENUM/STRUCT/UNION/FLOAT/DATASEC, `type` for the others.
    size_or_type: u32,
    extra: &'a [u8],
}

/// A member found by name: bit offset relative to the struct searched, and its type.
struct Found {
    bits: u64,
    type_id: u32,
    bitfield: bool,
}

/// The parsed BTF of a kernel (or of any BTF blob).
pub struct KernelBtf {
    types: Vec<u8>,
    strings: Vec<u8>,
    big_endian: bool,
    /// Byte offset in `types` of type id `i + 1` (id 0 is `void`).
    starts: Vec<u32>,
}

impl std::fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelBtf")
            .field("types", &self.starts.len())
            .field("strings_bytes", &self.strings.len())
            .finish()
    }
}

fn read_u32(bytes: &[u8], at: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
}

/// Bytes of kind-specific data that follow a type record.
fn trailing_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
        KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_FUNC
        | KIND_FLOAT | KIND_TYPE_TAG => 0,
        _ => return None,
    })
}

impl KernelBtf {
    /// Reads the running kernel's BTF from [`VMLINUX_BTF`].
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads raw BTF (not ELF) from a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::NotFound { path: path.to_path_buf() }
            } else {
                BtfError::Io { path: path.to_path_buf(), source }
            }
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses raw BTF: header, then the type and string sections it points to.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BtfError> {
        let bad = |what: &str| BtfError::Malformed(what.to_string());
        let magic = bytes.get(..2).ok_or_else(|| bad("shorter than its header"))?;
        let big_endian = match [magic[0], magic[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            _ => return Err(bad("bad magic (not a BTF blob)")),
        };
        let word = |at: usize| read_u32(bytes, at, big_endian).ok_or_else(|| bad("truncated header"));
        let hdr_len = word(4)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(bad("header too short"));
        }
        let section = |off: usize, len: usize, what: &str| {
            let (off, len) = (word(off)? as usize, word(len)? as usize);
            let start = hdr_len.checked_add(off);
            match start.and_then(|s| s.checked_add(len).map(|e| (s, e))) {
                Some((s, e)) if e <= bytes.len() => Ok(bytes[s..e].to_vec()),
                _ => Err(BtfError::Malformed(format!("{what} section out of bounds"))),
            }
        };
        let types = section(8, 12, "type")?;
        let strings = section(16, 20, "string")?;

        let mut starts = Vec::new();
        let mut at = 0usize;
        while at < types.len() {
            let info = read_u32(&types, at + 4, big_endian).ok_or_else(|| bad("truncated type record"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let id = starts.len() + 1;
            let extra = trailing_len(kind, vlen)
                .ok_or_else(|| BtfError::Malformed(format!("unknown kind {kind} (type id {id})")))?;
            let next = at + TYPE_HEADER + extra;
            if next > types.len() {
                return Err(BtfError::Malformed(format!("type id {id} runs past the type section")));
            }
            starts.push(u32::try_from(at).map_err(|_| bad("type section too large"))?);
            at = next;
        }
        Ok(KernelBtf { types, strings, big_endian, starts })
    }

    /// Number of types (ids `1..=count`).
    pub fn type_count(&self) -> usize {
        self.starts.len()
    }

    fn u32_at(&self, bytes: &[u8], at: usize) -> u32 {
        // Every record was bounds-checked in `from_bytes`.
        read_u32(bytes, at, self.big_endian).unwrap_or(0)
    }

    fn ty(&self, id: u32) -> Option<Ty<'_>> {
        let at = *self.starts.get((id as usize).checked_sub(1)?)? as usize;
        let info = self.u32_at(&self.types, at + 4);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra_len = trailing_len(kind, vlen)?;
        Some(Ty {
            name_off: self.u32_at(&self.types, at),
            kind,
            vlen,
            kind_flag: info >> 31 == 1,
            size_or_type: self.u32_at(&self.types, at + 8),
            extra: self.types.get(at + TYPE_HEADER..at + TYPE_HEADER + extra_len)?,
        })
    }

    /// The NUL-terminated string at `off` ("" when out of range or not UTF-8).
    fn name(&self, off: u32) -> &str {
        let tail = self.strings.get(off as usize..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or_default()
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        (1..=self.starts.len()).map(|i| i as u32)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the underlying type id.
    fn strip(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    fn is_composite(&self, id: u32) -> bool {
        self.ty(id).is_some_and(|t| matches!(t.kind, KIND_STRUCT | KIND_UNION))
    }

    /// Size in bytes of a type (None for void, functions and forward declarations).
    fn type_size(&self, id: u32, depth: u32) -> Option<u64> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.ty(self.strip(id))?;
        match t.kind {
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION | KIND_FLOAT => {
                Some(t.size_or_type.into())
            }
            KIND_PTR => Some(PTR_SIZE),
            KIND_ARRAY => {
                let elem = self.u32_at(t.extra, 0);
                let n = self.u32_at(t.extra, 8);
                self.type_size(elem, depth + 1)?.checked_mul(n.into())
            }
            _ => None,
        }
    }

    /// The named struct (or union) with that name; a full definition wins over a forward one.
    fn find_struct(&self, name: &str) -> Result<u32, BtfError> {
        self.ids()
            .find(|&id| self.is_composite(id) && self.ty(id).is_some_and(|t| self.name(t.name_off) == name))
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Searches `composite` for a member called `name`, descending into anonymous struct and
    /// union members.
    fn find_member(&self, composite: u32, name: &str, depth: u32) -> Option<Found> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.ty(composite)?;
        for i in 0..t.vlen {
            let m_name = self.name(self.u32_at(t.extra, i * 12));
            let m_type = self.u32_at(t.extra, i * 12 + 4);
            let m_off = self.u32_at(t.extra, i * 12 + 8);
            let (bits, bitfield_size) =
                if t.kind_flag { (m_off & 0xff_ffff, m_off >> 24) } else { (m_off, 0) };
            if m_name == name {
                let bitfield = bitfield_size != 0 || bits % 8 != 0 || self.is_int_bitfield(m_type);
                return Some(Found { bits: bits.into(), type_id: m_type, bitfield });
            }
            if m_name.is_empty() {
                let inner = self.strip(m_type);
                if self.is_composite(inner) {
                    if let Some(found) = self.find_member(inner, name, depth + 1) {
                        return Some(Found { bits: found.bits + u64::from(bits), ..found });
                    }
                }
            }
        }
        None
    }

    /// Old-style bitfield: an INT whose encoding has a bit offset or fewer bits than its size.
    fn is_int_bitfield(&self, id: u32) -> bool {
        match self.ty(self.strip(id)) {
            Some(t) if t.kind == KIND_INT => {
                let enc = self.u32_at(t.extra, 0);
                let (bits, offset) = (enc & 0xff, (enc >> 16) & 0xff);
                offset != 0 || bits != t.size_or_type.saturating_mul(8)
            }
            _ => false,
        }
    }

    /// Offset and size of a (dotted) member path in `struct struct_name`, e.g.
    /// `member("net_device", "nd_net.net")`. Anonymous struct/union members are searched
    /// recursively; typedefs and qualifiers are followed when descending into a named member.
    pub fn member(&self, struct_name: &str, path: &str) -> Result<MemberInfo, BtfError> {
        let no_member =
            || BtfError::NoMember { struct_name: struct_name.to_string(), path: path.to_string() };
        let mut current = self.find_struct(struct_name)?;
        let mut bits = 0u64;
        let mut last = None;
        for (i, part) in path.split('.').enumerate() {
            if part.is_empty() {
                return Err(no_member());
            }
            if i > 0 {
                let prev: &Found = last.as_ref().ok_or_else(no_member)?;
                current = self.strip(prev.type_id);
                if !self.is_composite(current) {
                    let member = path.split('.').nth(i - 1).unwrap_or_default().to_string();
                    return Err(BtfError::NotAStruct {
                        struct_name: struct_name.to_string(),
                        path: path.to_string(),
                        member,
                    });
                }
            }
            let found = self.find_member(current, part, 0).ok_or_else(no_member)?;
            if found.bitfield {
                return Err(BtfError::Bitfield {
                    struct_name: struct_name.to_string(),
                    path: path.to_string(),
                });
            }
            bits += found.bits;
            last = Some(found);
        }
        let found = last.ok_or_else(no_member)?;
        let offset = u32::try_from(bits / 8).map_err(|_| no_member())?;
        let size = self.type_size(found.type_id, 0).unwrap_or(0);
        Ok(MemberInfo { offset, size })
    }

    /// Byte offset of a (dotted) member path in `struct struct_name`; see [`Self::member`].
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        self.member(struct_name, path).map(|m| m.offset)
    }

    /// Whether a BTF `FUNC` of that name exists (a kernel function fentry/kprobes can name).
    /// Scans every type: call it a handful of times, not per event.
    pub fn has_function(&self, name: &str) -> bool {
        self.ids().filter_map(|id| self.ty(id)).any(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name)
    }

    /// The offsets the eBPF programs need, with each member's size checked against what the
    /// programs read.
    /// The arguments of tracepoint `name` as its raw (`tp_btf`, `raw_tp`) programs get them:
    /// the parameters of the kernel's `btf_trace_<name>` prototype after its leading
    /// `void *__data`. None when this BTF has no such prototype (not a tracepoint of this
    /// kernel, or BTF without tracepoint types).
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<TpArg>> {
        let typedef = format!("btf_trace_{name}");
        let id = self.ids().find(|&id| {
            self.ty(id).is_some_and(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == typedef)
        })?;
        let ptr = self.ty(self.strip(id)).filter(|t| t.kind == KIND_PTR)?;
        let proto = self.ty(self.strip(ptr.size_or_type)).filter(|t| t.kind == KIND_FUNC_PROTO)?;
        let params = (0..proto.vlen).map(|i| {
            let name = self.name(self.u32_at(proto.extra, i * 8)).to_owned();
            let kind = self.arg_kind(self.u32_at(proto.extra, i * 8 + 4));
            TpArg { name, kind }
        });
        Some(params.skip(1).collect())
    }

    fn arg_kind(&self, type_id: u32) -> ArgKind {
        let Some(t) = self.ty(self.strip(type_id)) else { return ArgKind::Other };
        match t.kind {
            KIND_PTR => match self.ty(self.strip(t.size_or_type)) {
                Some(p) if matches!(p.kind, KIND_STRUCT | KIND_FWD) => match self.name(p.name_off) {
                    "sk_buff" => ArgKind::Skb,
                    "net_device" => ArgKind::NetDevice,
                    _ => ArgKind::Pointer,
                },
                None if self.strip(t.size_or_type) == 0 => ArgKind::VoidPointer,
                _ => ArgKind::Pointer,
            },
            KIND_ENUM | KIND_ENUM64 if self.name(t.name_off) == "skb_drop_reason" => ArgKind::DropReason,
            KIND_INT => {
                let signed = self.u32_at(t.extra, 0) >> 24 & 1 == 1;
                ArgKind::Int { size: t.size_or_type, signed }
            }
            _ => ArgKind::Other,
        }
    }

    /// The enumerators of `enum name` (ENUM or ENUM64), as (value, name), in BTF order. None
    /// when this BTF has no such enum (e.g. `skb_drop_reason` before 5.17).
    pub fn enum_values(&self, name: &str) -> Option<Vec<(i64, String)>> {
        let t = self.ids().filter_map(|id| self.ty(id)).find(|t| {
            matches!(t.kind, KIND_ENUM | KIND_ENUM64) && t.vlen > 0 && self.name(t.name_off) == name
        })?;
        let signed = t.kind_flag;
        let values = (0..t.vlen).map(|i| {
            if t.kind == KIND_ENUM {
                let v = self.u32_at(t.extra, i * 8 + 4);
                let v = if signed { i64::from(v as i32) } else { i64::from(v) };
                (v, self.name(self.u32_at(t.extra, i * 8)).to_owned())
            } else {
                let lo = u64::from(self.u32_at(t.extra, i * 12 + 4));
                let hi = u64::from(self.u32_at(t.extra, i * 12 + 8));
                ((hi << 32 | lo) as i64, self.name(self.u32_at(t.extra, i * 12)).to_owned())
            }
        });
        Some(values.collect())
    }

    pub fn kernel_layout(&self) -> Result<KernelLayout, BtfError> {
        let get = |struct_name: &str, path: &str, expected: u64| {
            let m = self.member(struct_name, path)?;
            if m.size != expected {
                return Err(BtfError::UnexpectedSize {
                    struct_name: struct_name.to_string(),
                    path: path.to_string(),
                    size: m.size,
                    expected,
                });
            }
            Ok(m.offset)
        };
        let dev_nd_net = match get("net_device", "nd_net.net", PTR_SIZE) {
            Err(BtfError::NoMember { .. }) if self.member("net_device", "nd_net").is_ok() => {
                return Err(BtfError::NoNetNs)
            }
            other => other?,
        };
        Ok(KernelLayout {
            skb_dev: get("sk_buff", "dev", PTR_SIZE)?,
            skb_len: get("sk_buff", "len", 4)?,
            skb_protocol: get("sk_buff", "protocol", 2)?,
            skb_head: get("sk_buff", "head", PTR_SIZE)?,
            skb_network_header: get("sk_buff", "network_header", 2)?,
            dev_ifindex: get("net_device", "ifindex", 4)?,
            dev_name: get("net_device", "name", NAME_LEN as u64)?,
            dev_nd_net,
            net_inum: get("net", "ns.inum", 4)?,
            skb_data: get("sk_buff", "data", PTR_SIZE)?,
            skb_mac_header: get("sk_buff", "mac_header", 2)?,
            // `sk_buff_data_t`: an offset from `head` (u32) on 64-bit kernels.
            skb_tail: get("sk_buff", "tail", 4)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds little-endian BTF blobs.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder { types: Vec::new(), strings: vec![0], next_id: 1 }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        /// Adds a type; `extra` is its trailing data as u32 words. Returns its id.
        fn ty(&mut self, kind: u32, name: &str, vlen: u32, kflag: bool, st: u32, extra: &[u32]) -> u32 {
            let name_off = self.str(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for w in [name_off, info, st].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        /// A struct/union with (name, type, bit offset) members.
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kflag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(m, t, off) in members {
                extra.extend([self.str(m), t, off]);
            }
            self.ty(kind, name, members.len() as u32, kflag, size, &extra)
        }

        fn finish(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let words = [
                u32::from(MAGIC) | (1 << 16), // magic, version 1, flags 0
                24,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ];
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// ```c
    /// struct inner { struct net *net; };           typedef struct inner inner_t;
    /// struct outer {
    ///     int head;
    ///     union { int x; struct { int a; const int dev; }; };   // at 8
    ///     inner_t wrap;                                          // at 16
    ///     unsigned int flag:1, other:7;                          // kind_flag bitfields at 24
    ///     int *ptr;                                              // at 32
    ///     char name[16];                                         // at 40
    /// };
    /// ```
    /// preceded by one type of every other kind, so a wrong trailing-data length breaks it.
    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.ty(KIND_INT, "int", 0, false, 4, &[(1 << 24) | 32]); // signed, 32 bits
        let char_ = b.ty(KIND_INT, "char", 0, false, 1, &[8]);
        let arr = b.ty(KIND_ARRAY, "", 0, false, 0, &[char_, int, 16]);
        b.ty(KIND_ENUM, "e", 2, false, 4, &[0, 0, 0, 1]);
        b.ty(KIND_ENUM64, "e64", 1, false, 8, &[0, 1, 2]);
        let proto = b.ty(KIND_FUNC_PROTO, "", 2, false, int, &[0, int, 0, int]);
        b.ty(KIND_FUNC, "netif_rx", 0, false, proto, &[]);
        b.ty(KIND_FWD, "fwd", 0, false, 0, &[]);
        let var = b.ty(KIND_VAR, "v", 0, false, int, &[1]);
        b.ty(KIND_DATASEC, ".data", 1, false, 4, &[var, 0, 4]);
        b.ty(KIND_FLOAT, "float", 0, false, 4, &[]);
        b.ty(KIND_DECL_TAG, "tag", 0, false, int, &[u32::MAX]);
        b.ty(KIND_TYPE_TAG, "tt", 0, false, int, &[]);
        b.ty(KIND_RESTRICT, "", 0, false, int, &[]);
        b.ty(KIND_VOLATILE, "", 0, false, int, &[]);
        let const_int = b.ty(KIND_CONST, "", 0, false, int, &[]);
        let ptr = b.ty(KIND_PTR, "", 0, false, int, &[]);
        let anon_s = b.composite(KIND_STRUCT, "", 8, false, &[("a", int, 0), ("dev", const_int, 32)]);
        let anon_u = b.composite(KIND_UNION, "", 8, false, &[("x", int, 0), ("", anon_s, 0)]);
        let inner = b.composite(KIND_STRUCT, "inner", 8, false, &[("net", ptr, 0)]);
        let inner_t = b.ty(KIND_TYPEDEF, "inner_t", 0, false, inner, &[]);
        let uint = b.ty(KIND_INT, "unsigned int", 0, false, 4, &[32]);
        b.composite(
            KIND_STRUCT,
            "outer",
            56,
            true,
            &[
                ("head", int, 0),
                ("", anon_u, 64),
                ("wrap", inner_t, 128),
                ("flag", uint, (1 << 24) | 192),
                ("other", uint, (7 << 24) | 193),
                ("ptr", ptr, 256),
                ("name", arr, 320),
            ],
        );
        // Old-style (kind_flag 0) bitfield: the INT itself is 3 bits wide.
        let int3 = b.ty(KIND_INT, "int3", 0, false, 4, &[3]);
        b.composite(KIND_STRUCT, "old", 4, false, &[("bits", int3, 0)]);
        b.finish()
    }

    #[test]
    fn reads_enums_and_drop_arguments() {
        let mut b = Builder::new();
        let int = b.ty(KIND_INT, "int", 0, false, 4, &[(1 << 24) | 32]);
        // enum skb_drop_reason { SKB_NOT_DROPPED_YET = 0, SKB_DROP_REASON_NO_SOCKET = 3, ... }
        let n0 = b.str("SKB_NOT_DROPPED_YET");
        let n1 = b.str("SKB_DROP_REASON_NO_SOCKET");
        let n2 = b.str("SKB_DROP_REASON_NETFILTER_DROP");
        let reason = b.ty(KIND_ENUM, "skb_drop_reason", 3, false, 4, &[n0, 0, n1, 3, n2, 12]);
        // A signed enum (kind_flag) with a negative value, and an ENUM64.
        let m = b.str("MINUS");
        b.ty(KIND_ENUM, "signed_e", 1, true, 4, &[m, u32::MAX]);
        let big = b.str("BIG");
        b.ty(KIND_ENUM64, "e64", 1, false, 8, &[big, 1, 2]);
        let skb = b.composite(KIND_STRUCT, "sk_buff", 8, false, &[("len", int, 0)]);
        let skb_ptr = b.ty(KIND_PTR, "", 0, false, skb, &[]);
        let void_ptr = b.ty(KIND_PTR, "", 0, false, 0, &[]);
        // void (*)(void *, struct sk_buff *, void *location, enum skb_drop_reason)
        let proto =
            b.ty(KIND_FUNC_PROTO, "", 4, false, 0, &[0, void_ptr, 0, skb_ptr, 0, void_ptr, 0, reason]);
        let ptr = b.ty(KIND_PTR, "", 0, false, proto, &[]);
        b.ty(KIND_TYPEDEF, "btf_trace_kfree_skb", 0, false, ptr, &[]);
        let btf = KernelBtf::from_bytes(&b.finish()).expect("parse");
        let values = btf.enum_values("skb_drop_reason").expect("enum");
        assert_eq!(
            values,
            vec![
                (0, "SKB_NOT_DROPPED_YET".to_owned()),
                (3, "SKB_DROP_REASON_NO_SOCKET".to_owned()),
                (12, "SKB_DROP_REASON_NETFILTER_DROP".to_owned())
            ]
        );
        assert_eq!(btf.enum_values("signed_e").unwrap(), vec![(-1, "MINUS".to_owned())]);
        assert_eq!(btf.enum_values("e64").unwrap(), vec![((2i64 << 32) | 1, "BIG".to_owned())]);
        assert_eq!(btf.enum_values("nope"), None);
        let kinds: Vec<ArgKind> = btf.tracepoint_args("kfree_skb").unwrap().iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec![ArgKind::Skb, ArgKind::VoidPointer, ArgKind::DropReason]);
    }

    #[test]
    fn the_running_kernels_drop_reasons() {
        let btf = match KernelBtf::from_sys() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("skipping: no kernel BTF here ({e})");
                return;
            }
        };
        let Some(values) = btf.enum_values("skb_drop_reason") else {
            eprintln!("skipping: this kernel has no enum skb_drop_reason (before 5.17)");
            return;
        };
        let names: Vec<&str> = values.iter().map(|(_, n)| n.as_str()).collect();
        for want in
            ["SKB_DROP_REASON_NOT_SPECIFIED", "SKB_DROP_REASON_NO_SOCKET", "SKB_DROP_REASON_NETFILTER_DROP"]
        {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        // The tracepoint's prototype has the reason where the BTF says, whatever the kernel.
        let args = btf.tracepoint_args("kfree_skb").expect("btf_trace_kfree_skb");
        assert_eq!(args[0].kind, ArgKind::Skb);
        assert!(args.iter().any(|a| a.kind == ArgKind::DropReason), "{args:?}");
        assert!(args.iter().any(|a| a.kind == ArgKind::VoidPointer), "{args:?}");
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = KernelBtf::from_bytes(&sample()).expect("parse");
        assert_eq!(btf.member_offset("outer", "head").expect("head"), 0);
        assert_eq!(btf.member_offset("outer", "x").expect("x"), 8);
        assert_eq!(btf.member_offset("outer", "a").expect("a"), 8);
        assert_eq!(btf.member("outer", "dev").expect("dev"), MemberInfo { offset: 12, size: 4 });
        assert_eq!(btf.member_offset("outer", "wrap").expect("wrap"), 16);
        assert_eq!(btf.member("outer", "wrap.net").expect("wrap.net"), MemberInfo { offset: 16, size: 8 });
        assert_eq!(btf.member("outer", "ptr").expect("ptr"), MemberInfo { offset: 32, size: 8 });
        assert_eq!(btf.member("outer", "name").expect("name"), MemberInfo { offset: 40, size: 16 });
        assert_eq!(btf.member_offset("inner", "net").expect("inner.net"), 0);
        assert!(btf.has_function("netif_rx"));
        assert!(!btf.has_function("outer"));
        assert!(!btf.has_function("nope"));
    }

    #[test]
    fn lookup_errors_name_struct_and_path() {
        let btf = KernelBtf::from_bytes(&sample()).expect("parse");
        let e = btf.member_offset("outer", "wrap.nope").expect_err("missing");
        assert!(matches!(e, BtfError::NoMember { .. }), "{e:?}");
        assert_eq!(e.to_string(), "`struct outer` has no member `wrap.nope` in kernel BTF");
        let e = btf.member_offset("nostruct", "x").expect_err("no struct");
        assert_eq!(e.to_string(), "kernel BTF has no `struct nostruct`");
        let e = btf.member_offset("outer", "head.x").expect_err("not a struct");
        assert!(matches!(e, BtfError::NotAStruct { ref member, .. } if member == "head"), "{e:?}");
        for path in ["", ".", "wrap.", ".head"] {
            assert!(matches!(btf.member_offset("outer", path), Err(BtfError::NoMember { .. })), "{path:?}");
        }
        for (s, path) in [("outer", "flag"), ("outer", "other"), ("old", "bits")] {
            let e = btf.member_offset(s, path).expect_err("bitfield");
            assert!(matches!(e, BtfError::Bitfield { .. }), "{s}.{path}: {e:?}");
        }
        // The anonymous members themselves have no name to look up.
        assert!(btf.kernel_layout().is_err());
    }

    #[test]
    fn malformed_blobs_are_errors() {
        let good = sample();
        assert!(KernelBtf::from_bytes(&[]).is_err());
        assert!(KernelBtf::from_bytes(&[0x9f, 0xeb, 1]).is_err());
        assert!(KernelBtf::from_bytes(b"\x7fELF............................").is_err());
        for len in 0..good.len() {
            // Truncation: either an error or (cut inside the string section) a usable table.
            if let Ok(btf) = KernelBtf::from_bytes(&good[..len]) {
                let _ = btf.member_offset("outer", "dev");
            }
        }
        let mut unknown = good.clone();
        unknown[24 + 7] = 31; // first type's kind byte
        let e = KernelBtf::from_bytes(&unknown).expect_err("unknown kind");
        assert_eq!(e.to_string(), "malformed BTF: unknown kind 31 (type id 1)");
        // Every single-byte corruption parses or fails cleanly, and lookups never panic.
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            if let Ok(btf) = KernelBtf::from_bytes(&bad) {
                let _ = btf.member("outer", "wrap.net");
                let _ = btf.kernel_layout();
                let _ = btf.has_function("netif_rx");
            }
        }
    }

    #[test]
    fn typedef_loops_terminate() {
        let mut b = Builder::new();
        // Type 1 is a typedef of itself; struct s has a member of that type.
        b.ty(KIND_TYPEDEF, "loop", 0, false, 1, &[]);
        b.composite(KIND_STRUCT, "s", 4, false, &[("m", 1, 0), ("", 1, 0)]);
        let btf = KernelBtf::from_bytes(&b.finish()).expect("parse");
        assert!(matches!(btf.member_offset("s", "m.x"), Err(BtfError::NotAStruct { .. })));
        assert_eq!(btf.member("s", "m").expect("m").size, 0);
    }

    fn real() -> Option<KernelBtf> {
        match KernelBtf::from_sys() {
            Ok(btf) => Some(btf),
            Err(e) => {
                eprintln!("skipping: {e}");
                None
            }
        }
    }

    #[test]
    fn real_kernel_layout_is_plausible() {
        let Some(btf) = real() else { return };
        assert!(btf.type_count() > 10_000, "only {} types", btf.type_count());
        let l = btf.kernel_layout().expect("kernel layout");
        eprintln!("{l:?}");
        let all = [l.skb_dev, l.skb_len, l.skb_protocol, l.dev_ifindex, l.dev_name, l.dev_nd_net, l.net_inum];
        assert!(all.iter().all(|&o| o < 4096), "{l:?}");
        assert_ne!(l.skb_dev, l.skb_len);
        assert_ne!(l.skb_len, l.skb_protocol);
        assert_ne!(l.dev_ifindex, l.dev_name);
        assert_ne!(l.dev_name, l.dev_nd_net);
        // sk_buff starts with the list/rbnode union (next, prev), then `dev` in an anonymous
        // union; `len` follows the 48-byte control buffer.
        assert!(l.skb_dev >= 16 && l.skb_dev < 64, "{l:?}");
        assert!(l.skb_len > 48 && l.skb_len < 256, "{l:?}");
        assert_eq!(l.skb_dev % 8, 0);
        assert_eq!(l.dev_nd_net % 8, 0);
        assert_eq!(l.skb_len % 4, 0);
        assert_eq!(l.net_inum % 4, 0);
    }

    #[test]
    fn real_kernel_functions_and_errors() {
        let Some(btf) = real() else { return };
        assert!(btf.has_function("netif_rx"));
        assert!(btf.has_function("__netif_receive_skb"));
        assert!(!btf.has_function("no_such_function_dockertrace"));
        assert!(btf.member_offset("sk_buff", "dev").is_ok());
        assert!(matches!(btf.member_offset("sk_buff", "nope"), Err(BtfError::NoMember { .. })));
        // `pkt_type` is a 3-bit field of sk_buff.
        assert!(matches!(btf.member_offset("sk_buff", "pkt_type"), Err(BtfError::Bitfield { .. })));
    }
}

#[cfg(test)]
mod tracepoint_arg_tests {
    use super::*;

    #[test]
    fn real_kernel_tracepoint_prototypes() {
        let Ok(btf) = KernelBtf::from_sys() else {
            eprintln!("skipping: no readable {VMLINUX_BTF}");
            return;
        };
        for name in [
            "net_dev_xmit",
            "netif_rx",
            "netif_rx_exit",
            "net_dev_start_xmit",
            "kfree_skb",
            "net_dev_xmit_timeout",
        ] {
            eprintln!("{name}: {:?}", btf.tracepoint_args(name));
        }
        let xmit = btf.tracepoint_args("net_dev_xmit").expect("net_dev_xmit's prototype");
        let kinds: Vec<ArgKind> = xmit.iter().map(|a| a.kind).collect();
        assert_eq!(kinds[0], ArgKind::Skb);
        assert_eq!(kinds[2], ArgKind::NetDevice);
        assert!(matches!(kinds[3], ArgKind::Int { size: 4, signed: false }), "{xmit:?}");
        assert_eq!(
            btf.tracepoint_args("netif_rx_exit").unwrap()[0].kind,
            ArgKind::Int { size: 4, signed: true }
        );
        assert!(btf.tracepoint_args("no_such_tracepoint").is_none());
    }
}
