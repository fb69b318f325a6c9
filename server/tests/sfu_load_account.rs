//! The SFU load generator's accounting (server/examples/sfu_load/account.rs):
//! loss from RTP sequence numbers across their wrap, repeats and reordering,
//! frame loss per simulcast layer, the generated payloads read back through
//! a VP8 payload descriptor, and percentiles.

#[path = "../examples/sfu_load/account.rs"]
#[allow(dead_code)]
mod account;

use account::{
    audio_number_of, audio_packet, due_slots, extend_seq, percentile, video_frame, video_frame_of, FrameCounter, SeqCounter,
    VIDEO_HEADER,
};

#[test]
fn sequence_numbers_are_extended_across_the_wrap_both_ways() {
    let first = extend_seq(None, 65535);
    assert_eq!(extend_seq(Some(first), 0), first + 1, "forward over the wrap");
    assert_eq!(extend_seq(Some(first + 1), 65534), first - 1, "a late packet from before the wrap");
    assert_eq!(extend_seq(Some(first), 65000), first - 535);
    // Far from the highest: the nearest candidate wins, never a negative one.
    assert_eq!(extend_seq(None, 5), 65541);
    assert_eq!(extend_seq(Some(65541), 65530), 65530, "just before the first, not below zero");
    assert_eq!(extend_seq(Some(3 * 65536 + 10), 40000), 2 * 65536 + 40000);
}

#[test]
fn loss_counts_what_is_missing_up_to_the_highest_across_the_wrap() {
    let mut c = SeqCounter::default();
    // 65530 … 65535, 0 … 9 with 65533 and 4 lost: 16 expected, 14 received.
    for seq in (65530u32..65536).chain(0..10) {
        let seq = seq as u16;
        if seq != 65533 && seq != 4 {
            c.record(seq);
        }
    }
    assert_eq!(c.numbers.expected(), 16);
    assert_eq!(c.numbers.received(), 14);
    assert_eq!(c.numbers.lost(), 2);
}

#[test]
fn repeats_count_once_and_a_late_packet_fills_its_hole() {
    let mut c = SeqCounter::default();
    for seq in [100u16, 101, 103, 101, 104, 102, 104] {
        c.record(seq);
    }
    assert_eq!(c.numbers.expected(), 5);
    assert_eq!(c.numbers.received(), 5, "102 came late (a retransmission), 101 and 104 twice");
    assert_eq!(c.numbers.duplicates(), 2);
    assert_eq!(c.numbers.lost(), 0);
}

#[test]
fn a_restart_counts_from_after_the_highest_and_ignores_what_was_before() {
    let mut c = SeqCounter::default();
    for seq in [10u16, 11, 13] {
        c.record(seq);
    }
    c.numbers.restart();
    assert_eq!((c.numbers.expected(), c.numbers.received()), (0, 0));
    // 12 is from before the restart: late, not counted either way.
    for seq in [12u16, 16, 14] {
        c.record(seq);
    }
    assert_eq!(c.numbers.late(), 1);
    assert_eq!(c.numbers.expected(), 3, "14, 15, 16");
    assert_eq!(c.numbers.received(), 2);
    assert_eq!(c.numbers.lost(), 1);
}

#[test]
fn a_jump_beyond_the_window_forgets_old_numbers_but_counts_the_gap() {
    let mut c = SeqCounter::default();
    c.record(0);
    c.record(10_000);
    assert_eq!(c.numbers.expected(), 10_001);
    assert_eq!(c.numbers.lost(), 9_999);
    // A repeat of 0 is now too old to tell from a new one: ignored as late.
    c.record(0);
    assert_eq!(c.numbers.late(), 1);
    assert_eq!(c.numbers.received(), 2);
}

#[test]
fn a_wrap_over_many_cycles_loses_nothing() {
    let mut c = SeqCounter::default();
    for i in 0u32..200_000 {
        c.record((i % 65536) as u16);
    }
    assert_eq!(c.numbers.expected(), 200_000);
    assert_eq!(c.numbers.lost(), 0);
}

#[test]
fn frames_are_counted_per_layer_run_so_a_switch_is_no_loss() {
    let mut f = FrameCounter::default();
    // high 100..=104 with 102 lost, then mid from 57, then high again from 140.
    for n in [100u32, 101, 103, 104] {
        f.record(2, n);
    }
    for n in 57u32..60 {
        f.record(1, n);
    }
    for n in [140u32, 141, 143] {
        f.record(2, n);
    }
    assert_eq!(f.expected(), 5 + 3 + 4);
    assert_eq!(f.lost(), 2);
    assert_eq!(f.switches(), 2);
    assert_eq!(f.layer(), Some(2));
    f.restart();
    assert_eq!((f.expected(), f.lost(), f.switches()), (0, 0, 0));
    f.record(2, 145);
    assert_eq!((f.expected(), f.lost()), (2, 1), "144 missing after the restart");
}

#[test]
fn generated_payloads_read_back_through_a_vp8_descriptor() {
    let mut frame = Vec::new();
    video_frame(&mut frame, 10_416, 2, 0x0102_0304, true, 1280, 720);
    assert_eq!(frame.len(), 10_416);
    assert_eq!(frame[0] & 1, 0, "a keyframe's tag");
    assert_eq!(u16::from_le_bytes([frame[6], frame[7]]), 1280);
    // Descriptors as packetizers write them: 1 byte; X + 7-bit picture id;
    // X + 15-bit picture id + TL0PICIDX + TID/KEYIDX.
    for descriptor in [vec![0x10], vec![0x90, 0x80, 0x05], vec![0x90, 0xf0, 0x81, 0x02, 0x03, 0x40]] {
        let mut packet = descriptor.clone();
        packet.extend_from_slice(&frame[..1000]);
        assert_eq!(video_frame_of(&packet), Some((2, 0x0102_0304)), "{descriptor:?}");
        // The same frame's later packets (S clear) and a non-zero partition start none.
        packet[0] &= !0x10;
        assert_eq!(video_frame_of(&packet), None);
        packet[0] |= 0x11;
        assert_eq!(video_frame_of(&packet), None);
    }
    // Truncated: no panic, no frame.
    assert_eq!(video_frame_of(&[0x90, 0x80]), None);
    assert_eq!(video_frame_of(&[0x10, 1, 2]), None);
    assert_eq!(video_frame_of(&frame[..VIDEO_HEADER - 1]), None);

    let mut audio = Vec::new();
    audio_packet(&mut audio, 80, 77);
    assert_eq!((audio.len(), audio[0]), (80, 0xfc));
    assert_eq!(audio_number_of(&audio), Some(77));
    assert_eq!(audio_number_of(&audio[..3]), None);
}

#[test]
fn percentiles_are_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 50.0), Some(50.0));
    assert_eq!(percentile(&v, 95.0), Some(95.0));
    assert_eq!(percentile(&v, 99.5), Some(100.0));
    assert_eq!(percentile(&v, 100.0), Some(100.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
}

#[test]
fn a_schedule_sends_what_is_due_and_skips_a_stall_instead_of_bursting() {
    let mut next = 0;
    assert_eq!(due_slots(&mut next, 0), 0..1);
    assert_eq!(due_slots(&mut next, 0), 0..0, "nothing twice");
    assert_eq!(due_slots(&mut next, 2), 1..3);
    // A stall of 7 slots: the last three are sent, the rest skipped.
    assert_eq!(due_slots(&mut next, 10), 8..11);
    assert_eq!(next, 11);
    assert_eq!(due_slots(&mut next, 11), 11..12);
}
