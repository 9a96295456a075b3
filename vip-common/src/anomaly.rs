//! What can be wrong with a frame whose destination address may be a VIP's: its fate
//! (dropped for a VIP, passed otherwise) depends on that address, so the parser reports
//! the oddity instead of deciding.

/// An oddity found while parsing a frame after its destination address.
///
/// Not stored in any map: the datapath keeps it in its parse result only. `#[repr(u8)]`
/// so it costs the same as the `u8` it replaces.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// Nothing odd.
    None = 0,
    /// IPv4 MF/offset set, or an IPv6 fragment header: the flow's ports are not usable.
    Fragment = 1,
    /// More IPv6 extension headers than the datapath walks.
    Ipv6Ext = 2,
    /// IP length fields inconsistent with the frame, or an extension / transport header
    /// cut short.
    Malformed = 3,
}
