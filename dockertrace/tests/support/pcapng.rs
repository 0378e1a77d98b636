//! Reading back the pcapng files `--pcap` writes (pcap-file, the crate that writes them).
use std::{fs::File, path::Path};

use pcap_file::{pcapng::PcapNgReader, DataLink};

/// One packet of the file: its interface's name and link type, bytes, length on the wire and
/// comment.
pub struct Pkt {
    pub iface: String,
    pub link: DataLink,
    pub data: Vec<u8>,
    pub orig_len: u32,
    pub comment: String,
}

/// Every packet of a pcapng file dockertrace wrote (`--pcap`), read with pcap-file.
pub fn read_pcapng(path: &Path) -> Vec<Pkt> {
    use pcap_file::pcapng::{
        blocks::{enhanced_packet::EnhancedPacketOption, interface_description::InterfaceDescriptionOption},
        Block,
    };
    let mut r = PcapNgReader::new(File::open(path).expect("the pcapng file")).expect("a pcapng section");
    let mut ifaces: Vec<(String, DataLink)> = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        match b.expect("a well-formed block") {
            Block::InterfaceDescription(i) => {
                let name = i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                ifaces.push((name.expect("every interface is named"), i.linktype));
            }
            Block::EnhancedPacket(p) => {
                let (iface, link) = ifaces[p.interface_id as usize].clone();
                let comment = p.options.iter().find_map(|o| match o {
                    EnhancedPacketOption::Comment(c) => Some(c.to_string()),
                    _ => None,
                });
                out.push(Pkt {
                    iface,
                    link,
                    data: p.data.to_vec(),
                    orig_len: p.original_len,
                    comment: comment.expect("every packet has its comment"),
                });
            }
            _ => {}
        }
    }
    out
}
