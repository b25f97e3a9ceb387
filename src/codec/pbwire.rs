//! Reading protobuf's wire format without copies: the part the two
//! borrowing decoders share (`proto.rs` for events, `routed.rs` for the
//! repartition topic's records). They take on the common shapes and leave
//! everything else to prost, which has the final word.

pub(crate) const VARINT: u8 = 0;
pub(crate) const I64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const I32: u8 = 5;

pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    pub(crate) fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    #[inline]
    pub(crate) fn more(&self) -> bool {
        !self.b.is_empty()
    }

    // Hand-written rather than prost's `decode_varint` (same values, same
    // refusals): prost's took the event decoder's varint reads from 74M to
    // 124M instructions on 200k generated events (callgrind), +7.9% of the
    // whole protobuf decode, over the 3% a crate may cost on this path.
    #[inline]
    pub(crate) fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            // prost refuses a tenth byte above 1 (the value would overflow).
            if i == 9 && byte > 1 {
                return None;
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    /// The next field's number and wire type, or `None` at the end (and on
    /// field number 0, which prost refuses).
    #[inline]
    pub(crate) fn key(&mut self) -> Option<(u64, u8)> {
        let key = self.varint()?;
        let field = key >> 3;
        (field != 0 && key <= u64::from(u32::MAX)).then_some((field, (key & 7) as u8))
    }

    #[inline]
    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        self.take(n)
    }

    /// A length-delimited UTF-8 string.
    #[inline]
    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A string field, checking its wire type first.
    #[inline]
    pub(crate) fn str_of(&mut self, wire: u8) -> Option<&'a str> {
        if wire != LEN {
            return None;
        }
        self.str()
    }

    #[inline]
    pub(crate) fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            VARINT => self.varint().map(drop),
            I64 => self.take(8).map(drop),
            LEN => self.bytes().map(drop),
            I32 => self.take(4).map(drop),
            // Groups (deprecated) and invalid wire types: prost's call.
            _ => None,
        }
    }
}
