//! Tests of `vipctl trace`'s capture reader: files written with `pcap-file`'s own writers
//! read back as the frames written (pcap in both byte orders and both timestamp
//! resolutions, pcapng with several interfaces and sections); and, as properties, any
//! bytes and any damaged file (cut, a byte changed, a length field lying) give frames or
//! an error with a message, never a panic.

use std::{borrow::Cow, time::Duration};

use pcap_file::{
    DataLink, Endianness, TsResolution,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
            section_header::SectionHeaderBlock, simple_packet::SimplePacketBlock,
        },
    },
};
use proptest::prelude::*;

use crate::property_cases::cases;

use super::{MAX_TRACE_FRAME, PcapError, TraceError, check_frames, parse_pcap};

/// A pcap file of `frames` as tcpdump writes it.
fn pcap(frames: &[Vec<u8>], endianness: Endianness, ts: TsResolution) -> Vec<u8> {
    let header = PcapHeader {
        endianness,
        ts_resolution: ts,
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(Vec::new(), header).expect("writing a header");
    for (i, f) in frames.iter().enumerate() {
        let p = PcapPacket::new(Duration::from_micros(i as u64), f.len() as u32, f);
        w.write_packet(&p).expect("writing a packet");
    }
    w.into_writer()
}

/// A pcapng file of `frames` as Wireshark writes it: a section, an Ethernet interface,
/// one Enhanced Packet Block a frame.
fn pcapng(frames: &[Vec<u8>], endianness: Endianness) -> Vec<u8> {
    let section = SectionHeaderBlock {
        endianness,
        ..SectionHeaderBlock::default()
    };
    let mut w = PcapNgWriter::with_section_header(Vec::new(), section).expect("a section");
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .expect("an interface");
    for (i, f) in frames.iter().enumerate() {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::from_micros(i as u64),
            original_len: f.len() as u32,
            data: Cow::Borrowed(f),
            options: vec![],
        })
        .expect("a packet");
    }
    w.into_inner()
}

fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(prop::collection::vec(any::<u8>(), 14..200), 0..6)
}

#[test]
fn pcap_files_of_either_byte_order_and_resolution_read_back() {
    let frames = vec![vec![0xaa; 60], vec![0xbb; 14], vec![0xcc; 1514]];
    for e in [Endianness::Big, Endianness::Little] {
        for ts in [TsResolution::MicroSecond, TsResolution::NanoSecond] {
            assert_eq!(
                parse_pcap(&pcap(&frames, e, ts)).unwrap(),
                frames,
                "{e:?} {ts:?}"
            );
        }
    }
}

#[test]
fn pcapng_files_read_back_across_interfaces_sections_and_block_kinds() {
    let frames = vec![
        vec![0xaa; 60],
        vec![0xbb; 61],
        vec![0xcc; 62],
        vec![0xdd; 63],
    ];
    for e in [Endianness::Big, Endianness::Little] {
        let mut file = pcapng(&frames[..1], e);
        // A second section (files concatenated), with two interfaces: the packet names
        // the second; then a Simple Packet Block (interface 0, data padded to 4 bytes).
        let section = SectionHeaderBlock {
            endianness: e,
            ..SectionHeaderBlock::default()
        };
        let mut w = PcapNgWriter::with_section_header(Vec::new(), section).unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
            .unwrap();
        w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
            .unwrap();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 1,
            timestamp: Duration::ZERO,
            original_len: 61,
            data: Cow::Borrowed(&frames[1]),
            options: vec![],
        })
        .unwrap();
        w.write_pcapng_block(SimplePacketBlock {
            original_len: 62,
            data: Cow::Borrowed(&frames[2]),
        })
        .unwrap();
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: Duration::ZERO,
            original_len: 63,
            data: Cow::Borrowed(&frames[3]),
            options: vec![],
        })
        .unwrap();
        file.extend_from_slice(&w.into_inner());
        assert_eq!(parse_pcap(&file).unwrap(), frames, "{e:?}");
    }
}

#[test]
fn what_trace_cannot_replay_is_refused_saying_why() {
    let frames = vec![vec![0xaa; 60], vec![0xbb; 60]];
    let good = pcapng(&frames, Endianness::Little);
    // Cut inside the second packet.
    assert_eq!(
        parse_pcap(&good[..good.len() - 10]),
        Err(PcapError::CutShort { packets: 1 })
    );
    // A captured length that is not the length on the wire (snap length too small).
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 0))
        .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::ZERO,
        original_len: 1500,
        data: Cow::Borrowed(&frames[0]),
        options: vec![],
    })
    .unwrap();
    let e = parse_pcap(&w.into_inner()).unwrap_err();
    assert_eq!(
        e,
        PcapError::Truncated {
            packet: 1,
            captured: 60,
            length: 1500
        }
    );
    assert!(e.to_string().contains("larger snap length"), "{e}");
    // An interface that is not Ethernet.
    let mut w = PcapNgWriter::new(Vec::new()).unwrap();
    w.write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::RAW, 0))
        .unwrap();
    w.write_pcapng_block(EnhancedPacketBlock {
        interface_id: 0,
        timestamp: Duration::ZERO,
        original_len: 60,
        data: Cow::Borrowed(&frames[0]),
        options: vec![],
    })
    .unwrap();
    let e = parse_pcap(&w.into_inner()).unwrap_err();
    assert!(e.to_string().contains("is not Ethernet"), "{e}");
    // A packet naming an interface that was never described.
    let mut bad = good.clone();
    // The first EPB follows the SHB (28 bytes) and the IDB (20): its interface id.
    bad[48 + 8] = 7;
    let e = parse_pcap(&bad).unwrap_err();
    assert_eq!(
        e,
        PcapError::NoInterface {
            packet: 1,
            interface: 7
        }
    );
    // A block whose trailing length disagrees with its leading one.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 4] ^= 0x40;
    let e = parse_pcap(&bad).unwrap_err().to_string();
    assert!(
        e.contains("pcapng file corrupt after 1 whole packets"),
        "{e}"
    );
    // Neither format, or nothing at all.
    let e = parse_pcap(&[0u8; 30]).unwrap_err().to_string();
    assert!(e.contains("not a pcap or pcapng file"), "{e}");
    let e = parse_pcap(&[0xd4, 0xc3]).unwrap_err().to_string();
    assert!(e.contains("too short"), "{e}");
    // A classic pcap cut inside a packet, and a snap-length-limited capture.
    let p = pcap(&frames, Endianness::Little, TsResolution::MicroSecond);
    assert_eq!(
        parse_pcap(&p[..p.len() - 1]),
        Err(PcapError::CutShort { packets: 1 })
    );
    let mut short = p.clone();
    // The first packet's orig_len (after the 24-byte header, at +12).
    short[24 + 12..24 + 16].copy_from_slice(&100u32.to_le_bytes());
    assert_eq!(
        parse_pcap(&short),
        Err(PcapError::Truncated {
            packet: 1,
            captured: 60,
            length: 100
        })
    );
}

/// A capture with a frame `BPF_PROG_TEST_RUN` would refuse (a runt) or split (longer
/// than one buffer) used to fail with the kernel's bare EINVAL, or trace the split frame
/// as malformed: it is refused before anything is loaded, naming the packet.
#[test]
fn frames_test_run_cannot_take_whole_are_refused_naming_the_packet() {
    let ok = vec![0u8; 60];
    assert!(check_frames(&[ok.clone(), vec![0; 14], vec![0; MAX_TRACE_FRAME]]).is_ok());
    for (len, why) in [(10, "shorter than an Ethernet header"), (9014, "GRO")] {
        let e = check_frames(&[ok.clone(), vec![0; len], ok.clone()]).unwrap_err();
        assert!(
            matches!(e, TraceError::FrameSize { packet: 2, len: l } if l == len),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains(&format!("packet 2 is {len} bytes")), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
}

/// A message, and nothing past the frames that were written.
fn check(result: &Result<Vec<Vec<u8>>, PcapError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(!e.to_string().trim().is_empty(), "empty message: {e:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_bytes_are_frames_or_an_error_with_a_message(
        magic in prop::sample::select(vec![
            vec![],
            vec![0x0a, 0x0d, 0x0d, 0x0a],
            vec![0xd4, 0xc3, 0xb2, 0xa1],
            vec![0xa1, 0xb2, 0xc3, 0xd4],
            vec![0x4d, 0x3c, 0xb2, 0xa1],
        ]),
        rest in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut b = magic;
        b.extend_from_slice(&rest);
        check(&parse_pcap(&b))?;
    }

    /// A valid file cut anywhere reads as the frames before the cut, or is refused.
    #[test]
    fn a_cut_file_gives_a_prefix_of_its_frames_or_an_error(
        frames in frames(),
        ng in any::<bool>(),
        big in any::<bool>(),
        at in any::<prop::sample::Index>(),
    ) {
        let e = if big { Endianness::Big } else { Endianness::Little };
        let file = if ng { pcapng(&frames, e) } else { pcap(&frames, e, TsResolution::NanoSecond) };
        let whole = parse_pcap(&file);
        prop_assert_eq!(whole.as_ref(), Ok(&frames));
        let cut = &file[..at.index(file.len() + 1)];
        let r = parse_pcap(cut);
        check(&r)?;
        if let Ok(read) = &r {
            prop_assert!(frames.starts_with(read), "a cut file read as other frames");
        }
    }

    /// A valid file with a byte changed, or a 32-bit field (a length, an interface id,
    /// a link type) overwritten by a lie.
    #[test]
    fn a_damaged_file_gives_frames_or_an_error_with_a_message(
        frames in frames(),
        ng in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        word in prop::sample::select(vec![0u32, 1, 3, 12, 28, 0xffff, 0x7fff_ffff, 0xffff_fff0, u32::MAX]),
        how in 0..2u8,
    ) {
        let mut file = if ng {
            pcapng(&frames, Endianness::Little)
        } else {
            pcap(&frames, Endianness::Little, TsResolution::MicroSecond)
        };
        let i = at.index(file.len());
        if how == 0 {
            file[i] = byte;
        } else {
            // Aligned, as every field of both formats is.
            let i = (i & !3).min(file.len().saturating_sub(4));
            file[i..i + 4].copy_from_slice(&word.to_le_bytes());
        }
        check(&parse_pcap(&file))?;
    }
}
