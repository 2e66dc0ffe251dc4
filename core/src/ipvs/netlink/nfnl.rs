//! The netfilter netlink (nfnetlink) message layout that ctnetlink
//! ([`crate::ipvs::conntrack::ctnetlink`]) and ipset ([`super::ipset`]) share: the netlink
//! header, `struct nfgenmsg { u8 family; u8 version; be16 res_id }`, then attributes (length,
//! type, payload, padded to 4 bytes).

/// Attribute type flag of a nest.
pub(crate) const NLA_F_NESTED: u16 = 0x8000;
/// Attribute type flag of a big-endian number.
pub(crate) const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// `NFNETLINK_V0`, the nfgenmsg version.
const NFNETLINK_V0: u8 = 0;

/// Appends nfnetlink messages and their attributes to a buffer.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    /// One attribute with `payload`.
    pub(crate) fn attr(&mut self, ty: u16, payload: &[u8]) {
        self.0
            .extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(payload);
        self.pad();
    }

    /// Opens a nest of type `ty`; returns where it starts, for [`Writer::end`].
    pub(crate) fn begin(&mut self, ty: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    /// Closes the nest opened at `at`.
    pub(crate) fn end(&mut self, at: usize) {
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The netlink and nfgenmsg headers of message `msg` of subsystem `subsys`; returns the
    /// message start, for [`Writer::finish`].
    pub(crate) fn header(
        &mut self,
        subsys: u16,
        msg: u16,
        flags: u16,
        seq: u32,
        family: u8,
    ) -> usize {
        let start = self.0.len();
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        self.0
            .extend_from_slice(&((subsys << 8) | msg).to_ne_bytes());
        self.0.extend_from_slice(&flags.to_ne_bytes());
        self.0.extend_from_slice(&seq.to_ne_bytes());
        self.0.extend_from_slice(&0u32.to_ne_bytes());
        self.0.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
        start
    }

    /// Writes the length of the message started at `start`.
    pub(crate) fn finish(&mut self, start: usize) {
        let len = (self.0.len() - start) as u32;
        self.0[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }
}

/// The attributes of `payload`: (type without its flags, value); stops at a malformed one.
pub(crate) fn attrs(payload: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + 4 > payload.len() {
            return None;
        }
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            return None;
        }
        let value = &payload[off + 4..off + len];
        off += (len + 3) & !3;
        Some((ty, value))
    })
}

/// A big-endian `u16` attribute value.
pub(crate) fn be16(v: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_be_bytes(v?.get(..2)?.try_into().ok()?))
}

/// A big-endian `u32` attribute value.
pub(crate) fn be32(v: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_be_bytes(v?.get(..4)?.try_into().ok()?))
}
