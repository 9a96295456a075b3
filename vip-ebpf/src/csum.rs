//! Internet checksum helpers (RFC 1071).

/// Folds a 32-bit running sum to the 16-bit one's-complement checksum (not inverted).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Checksum of a 20-byte IPv4 header given as ten big-endian 16-bit words (checksum
/// field zero), ready to store big-endian.
#[inline(always)]
pub fn ipv4_header(words: &[u16; 10]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < 10 {
        sum += u32::from(words[i]);
        i += 1;
    }
    !fold(sum)
}

/// Checksum of a 20-byte IPv4 header given as five host-order 32-bit words (checksum
/// field zero): the one's-complement sum of the words folds to the sum of their halves.
#[inline(always)]
pub fn ipv4_header_words(words: &[u32; 5]) -> u16 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < 5 {
        sum += u64::from(words[i]);
        i += 1;
    }
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    !fold(sum as u32)
}
