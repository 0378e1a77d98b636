//! Decoding of ring-buffer records, with length checks and typed errors.
use std::mem::size_of;

use dockertrace_common::{Event, RECORD_EVENT};

/// Why a ring-buffer record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is too short for its header (needs 2)")]
    NoHeader { got: usize },
    #[error("record type {0} is unknown to this dockertrace version")]
    UnknownRecord(u16),
    #[error("event record has {got} bytes, expected {need}")]
    SizeMismatch { got: usize, need: usize },
}

/// A decoded record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Event(Event),
}

/// Decodes one record. Never panics on short or foreign input.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let Some(header) = bytes.get(..2) else {
        return Err(DecodeError::NoHeader { got: bytes.len() });
    };
    let record = u16::from_ne_bytes([header[0], header[1]]);
    match record {
        RECORD_EVENT => {
            let need = size_of::<Event>();
            // The kernel rounds records up to 8 bytes; an exact size is what we write.
            if bytes.len() != need {
                return Err(DecodeError::SizeMismatch { got: bytes.len(), need });
            }
            // SAFETY: the length is checked above, `Event` is plain integers (any bit pattern is
            // valid) and read_unaligned copes with the buffer's alignment.
            Ok(Record::Event(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) }))
        }
        other => Err(DecodeError::UnknownRecord(other)),
    }
}

/// The bytes of an event, as the kernel writes them (for tests and fuzzing).
pub fn encode(event: &Event) -> Vec<u8> {
    // SAFETY: `Event` is `repr(C)` without implicit padding.
    unsafe { std::slice::from_raw_parts((event as *const Event).cast::<u8>(), size_of::<Event>()) }.to_vec()
}

/// A fixed-size C string (comm, device name) as text, up to the first NUL.
pub fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match std::str::from_utf8(&bytes[..end]) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dockertrace_common::{EVENT_HAS_DEV, NAME_LEN};

    fn sample() -> Event {
        let mut dev = [0u8; NAME_LEN];
        dev[..5].copy_from_slice(b"veth0");
        Event {
            record: RECORD_EVENT,
            flags: EVENT_HAS_DEV,
            cpu: 1,
            ts_ns: 123,
            kind: 1500,
            pid: 7,
            tgid: 7,
            len: 108,
            skbaddr: 0xffff_8881_0000_1000,
            ifindex: 5,
            netns: 4026532290,
            stack_id: 3,
            protocol: 0x0800,
            _pad: 0,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            dev,
        }
    }

    #[test]
    fn round_trip() {
        let ev = sample();
        assert_eq!(decode(&encode(&ev)), Ok(Record::Event(ev)));
    }

    #[test]
    fn short_and_long_records_are_typed_errors() {
        let bytes = encode(&sample());
        assert_eq!(decode(&[]), Err(DecodeError::NoHeader { got: 0 }));
        assert_eq!(decode(&bytes[..1]), Err(DecodeError::NoHeader { got: 1 }));
        assert_eq!(decode(&bytes[..40]), Err(DecodeError::SizeMismatch { got: 40, need: 88 }));
        let mut long = bytes.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&long), Err(DecodeError::SizeMismatch { got: 96, need: 88 }));
    }

    #[test]
    fn unknown_record_type() {
        let mut bytes = encode(&sample());
        bytes[0] = 9;
        bytes[1] = 0;
        assert_eq!(decode(&bytes), Err(DecodeError::UnknownRecord(9)));
    }

    #[test]
    fn c_strings() {
        assert_eq!(c_str(b"eth0\0\0garbage"), "eth0");
        assert_eq!(c_str(b"full-sixteen-byt"), "full-sixteen-byt");
        assert_eq!(c_str(&[b'a', 0xff, b'b', 0]), "a");
        assert_eq!(c_str(&[]), "");
    }
}
