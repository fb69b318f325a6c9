//! ISO BMFF (fragmented MP4) box writers for one H.264 video track and one
//! AAC-LC audio track: the init segment (`ftyp` + `moov`), media fragments
//! (`moof` + `mdat`), and ID3 timed metadata in `emsg`; and, for a recording
//! that puts several broadcasts on one timeline, the decode times of
//! fragments read ([`track_spans`]) and moved ([`shift_decode_times`]).
//!
//! Pure functions over bytes; no I/O.

/// Track id of the video track in every file this module writes.
pub const VIDEO_TRACK_ID: u32 = 1;
/// Track id of the audio track.
pub const AUDIO_TRACK_ID: u32 = 2;
/// Video media timescale (RTP's H.264 clock).
pub const VIDEO_TIMESCALE: u32 = 90_000;

/// Video parameters for the init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// Audio parameters for the init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioParams {
    /// The AudioSpecificConfig (2 bytes for AAC-LC).
    pub asc: Vec<u8>,
    pub sample_rate: u32,
    pub channels: u16,
}

/// One sample of a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub duration: u32,
    pub keyframe: bool,
    pub data: Vec<u8>,
}

/// The samples of one track in one fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackRun<'a> {
    pub track_id: u32,
    /// Decode time of the first sample, in the track's timescale.
    pub base_decode_time: u64,
    pub samples: &'a [Sample],
}

struct BoxWriter {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl BoxWriter {
    fn new() -> Self {
        Self { buf: Vec::with_capacity(1024), open: Vec::new() }
    }
    fn start(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0, 0, 0]);
        self.buf.extend_from_slice(kind);
    }
    fn start_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.start(kind);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
    }
    fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = (self.buf.len() - start) as u32;
            if let Some(slot) = self.buf.get_mut(start..start + 4) {
                slot.copy_from_slice(&size.to_be_bytes());
            }
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }
    fn matrix(&mut self) {
        for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
            self.u32(v);
        }
    }
}

/// The init segment: `ftyp` + `moov` with an `avc1` video track (id 1) and
/// an `mp4a` audio track (id 2), and `mvex` so the media comes in fragments.
pub fn init_segment(video: &VideoParams, audio: &AudioParams) -> Vec<u8> {
    let mut w = BoxWriter::new();
    w.start(b"ftyp");
    w.bytes(b"iso6");
    w.u32(0);
    for brand in [b"iso6", b"cmfc", b"isom", b"mp41", b"avc1"] {
        w.bytes(brand);
    }
    w.end();

    w.start(b"moov");
    w.start_full(b"mvhd", 0, 0);
    w.u32(0); // creation
    w.u32(0); // modification
    w.u32(1000);
    w.u32(0); // duration: unknown (fragmented)
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    w.matrix();
    w.zeros(24);
    w.u32(AUDIO_TRACK_ID + 1);
    w.end();

    // Video track.
    w.start(b"trak");
    tkhd(&mut w, VIDEO_TRACK_ID, false, video.width, video.height);
    w.start(b"mdia");
    mdhd(&mut w, VIDEO_TIMESCALE);
    hdlr(&mut w, b"vide", b"VideoHandler");
    w.start(b"minf");
    w.start_full(b"vmhd", 0, 1);
    w.zeros(8);
    w.end();
    start_sample_entry(&mut w, b"avc1");
    w.zeros(16);
    w.u16(video.width.min(u32::from(u16::MAX)) as u16);
    w.u16(video.height.min(u32::from(u16::MAX)) as u16);
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frame count
    w.zeros(32); // compressor name
    w.u16(0x0018); // depth
    w.u16(0xffff); // pre_defined = -1
    w.start(b"avcC");
    w.u8(1);
    w.u8(video.sps.get(1).copied().unwrap_or(0x42));
    w.u8(video.sps.get(2).copied().unwrap_or(0));
    w.u8(video.sps.get(3).copied().unwrap_or(0x1f));
    w.u8(0xff); // 4-byte NAL lengths
    w.u8(0xe1); // one SPS
    w.u16(video.sps.len() as u16);
    w.bytes(&video.sps);
    w.u8(1);
    w.u16(video.pps.len() as u16);
    w.bytes(&video.pps);
    w.end(); // avcC
    end_track(&mut w);

    // Audio track.
    w.start(b"trak");
    tkhd(&mut w, AUDIO_TRACK_ID, true, 0, 0);
    w.start(b"mdia");
    mdhd(&mut w, audio.sample_rate);
    hdlr(&mut w, b"soun", b"SoundHandler");
    w.start(b"minf");
    w.start_full(b"smhd", 0, 0);
    w.zeros(4);
    w.end();
    start_sample_entry(&mut w, b"mp4a");
    w.zeros(8);
    w.u16(audio.channels);
    w.u16(16);
    w.zeros(4);
    w.u32(audio.sample_rate.min(0xffff) << 16);
    esds(&mut w, &audio.asc);
    end_track(&mut w);

    w.start(b"mvex");
    for track in [VIDEO_TRACK_ID, AUDIO_TRACK_ID] {
        w.start_full(b"trex", 0, 0);
        w.u32(track);
        w.u32(1); // sample description index
        w.u32(0);
        w.u32(0);
        w.u32(0);
        w.end();
    }
    w.end(); // mvex
    w.end(); // moov
    w.buf
}

fn tkhd(w: &mut BoxWriter, track_id: u32, audio: bool, width: u32, height: u32) {
    w.start_full(b"tkhd", 0, 0x3); // enabled, in movie
    w.u32(0);
    w.u32(0);
    w.u32(track_id);
    w.u32(0);
    w.u32(0); // duration
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate group
    w.u16(if audio { 0x0100 } else { 0 });
    w.u16(0);
    w.matrix();
    w.u32(width << 16);
    w.u32(height << 16);
    w.end();
}

fn mdhd(w: &mut BoxWriter, timescale: u32) {
    w.start_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(timescale);
    w.u32(0);
    w.u16(0x55c4); // language "und"
    w.u16(0);
    w.end();
}

fn hdlr(w: &mut BoxWriter, kind: &[u8; 4], name: &[u8]) {
    w.start_full(b"hdlr", 0, 0);
    w.u32(0);
    w.bytes(kind);
    w.zeros(12);
    w.bytes(name);
    w.u8(0);
    w.end();
}

fn dinf(w: &mut BoxWriter) {
    w.start(b"dinf");
    w.start_full(b"dref", 0, 0);
    w.u32(1);
    w.start_full(b"url ", 0, 1); // media in the same file
    w.end();
    w.end();
    w.end();
}

/// `dinf`, then `stbl` > `stsd` with its one sample entry of `format` opened,
/// up to and including the entry's data reference index. [`end_track`]
/// closes them.
fn start_sample_entry(w: &mut BoxWriter, format: &[u8; 4]) {
    dinf(w);
    w.start(b"stbl");
    w.start_full(b"stsd", 0, 0);
    w.u32(1); // entry count
    w.start(format);
    w.zeros(6);
    w.u16(1); // data reference index
}

/// Close the sample entry and `stsd` from [`start_sample_entry`], add the
/// (empty: samples live in fragments) sample tables, and close the track.
fn end_track(w: &mut BoxWriter) {
    w.end(); // sample entry
    w.end(); // stsd
    empty_sample_tables(w);
    w.end(); // stbl
    w.end(); // minf
    w.end(); // mdia
    w.end(); // trak
}

fn empty_sample_tables(w: &mut BoxWriter) {
    for kind in [b"stts", b"stsc", b"stco"] {
        w.start_full(kind, 0, 0);
        w.u32(0);
        w.end();
    }
    w.start_full(b"stsz", 0, 0);
    w.u32(0);
    w.u32(0);
    w.end();
}

fn descriptor(w: &mut BoxWriter, tag: u8, body: &[u8]) {
    w.u8(tag);
    // Four-byte "expandable" size: the encoding every muxer accepts.
    let len = body.len() as u32;
    w.u8(0x80 | ((len >> 21) & 0x7f) as u8);
    w.u8(0x80 | ((len >> 14) & 0x7f) as u8);
    w.u8(0x80 | ((len >> 7) & 0x7f) as u8);
    w.u8((len & 0x7f) as u8);
    w.bytes(body);
}

fn esds(w: &mut BoxWriter, asc: &[u8]) {
    let mut dec_specific = BoxWriter::new();
    descriptor(&mut dec_specific, 0x05, asc);
    let mut dec_config = BoxWriter::new();
    dec_config.u8(0x40); // MPEG-4 audio
    dec_config.u8(0x15); // audio stream
    dec_config.bytes(&[0, 0, 0]); // buffer size
    dec_config.u32(128_000); // max bitrate
    dec_config.u32(128_000); // avg bitrate
    dec_config.bytes(&dec_specific.buf);
    let mut es = BoxWriter::new();
    es.u16(0); // ES id
    es.u8(0);
    descriptor(&mut es, 0x04, &dec_config.buf);
    descriptor(&mut es, 0x06, &[0x02]); // SL config
    w.start_full(b"esds", 0, 0);
    descriptor(w, 0x03, &es.buf);
    w.end();
}

/// `sample_flags` of a trun entry.
fn sample_flags(keyframe: bool) -> u32 {
    if keyframe {
        0x0200_0000 // depends on no other sample
    } else {
        0x0101_0000 // depends on others, not a sync sample
    }
}

/// One fragment: `moof` (one `traf` per non-empty run, in order) + `mdat`.
pub fn fragment(sequence_number: u32, runs: &[TrackRun<'_>]) -> Vec<u8> {
    let runs: Vec<&TrackRun<'_>> = runs.iter().filter(|r| !r.samples.is_empty()).collect();
    let mut w = BoxWriter::new();
    w.start(b"moof");
    w.start_full(b"mfhd", 0, 0);
    w.u32(sequence_number);
    w.end();
    let mut data_offset_slots = Vec::with_capacity(runs.len());
    for run in &runs {
        w.start(b"traf");
        w.start_full(b"tfhd", 0, 0x02_0000); // default-base-is-moof
        w.u32(run.track_id);
        w.end();
        w.start_full(b"tfdt", 1, 0);
        w.u64(run.base_decode_time);
        w.end();
        // data-offset, duration, size, flags per sample.
        w.start_full(b"trun", 0, 0x000_0701);
        w.u32(run.samples.len() as u32);
        data_offset_slots.push(w.buf.len());
        w.u32(0);
        for s in run.samples {
            w.u32(s.duration);
            w.u32(s.data.len() as u32);
            w.u32(sample_flags(s.keyframe));
        }
        w.end();
        w.end();
    }
    w.end(); // moof
    let moof_len = w.buf.len();
    let mut offset = moof_len + 8;
    for (slot, run) in data_offset_slots.iter().zip(&runs) {
        if let Some(bytes) = w.buf.get_mut(*slot..*slot + 4) {
            bytes.copy_from_slice(&(offset as u32).to_be_bytes());
        }
        offset += run.samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    w.start(b"mdat");
    for run in &runs {
        for s in run.samples {
            w.bytes(&s.data);
        }
    }
    w.end();
    w.buf
}

/// An ID3v2.4 tag with one `TXXX` frame (empty description) holding `text`:
/// what the IVS Player and hls.js surface as a text metadata cue.
pub fn id3_txxx(text: &str) -> Vec<u8> {
    let mut frame_body = vec![3u8, 0]; // UTF-8, empty description
    frame_body.extend_from_slice(text.as_bytes());
    let mut out = Vec::with_capacity(frame_body.len() + 20);
    out.extend_from_slice(b"ID3");
    out.extend_from_slice(&[4, 0, 0]);
    out.extend_from_slice(&synchsafe((frame_body.len() + 10) as u32));
    out.extend_from_slice(b"TXXX");
    out.extend_from_slice(&synchsafe(frame_body.len() as u32));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&frame_body);
    out
}

fn synchsafe(v: u32) -> [u8; 4] {
    [((v >> 21) & 0x7f) as u8, ((v >> 14) & 0x7f) as u8, ((v >> 7) & 0x7f) as u8, (v & 0x7f) as u8]
}

/// The standard ID3-in-`emsg` scheme (AOM), which hls.js reads.
pub const EMSG_SCHEME_AOM_ID3: &str = "https://aomedia.org/emsg/ID3";
/// The ID3-in-`emsg` scheme the IVS Player's fMP4 reader reads; it ignores
/// the AOM one (and hls.js ignores this one), so cues carry both.
pub const EMSG_SCHEME_TWITCH_ID3: &str = "urn:twitch:id3";

/// A version-1 `emsg` box with scheme `https://aomedia.org/emsg/ID3`
/// carrying `id3` at `presentation_time` (in `timescale`).
pub fn emsg_id3(timescale: u32, presentation_time: u64, id: u32, id3: &[u8]) -> Vec<u8> {
    let mut w = BoxWriter::new();
    w.start_full(b"emsg", 1, 0);
    w.u32(timescale);
    w.u64(presentation_time);
    w.u32(0xffff_ffff); // duration unknown
    w.u32(id);
    w.bytes(EMSG_SCHEME_AOM_ID3.as_bytes());
    w.bytes(b"\0");
    w.bytes(b"\0");
    w.bytes(id3);
    w.end();
    w.buf
}

/// A version-0 `emsg` box with scheme `urn:twitch:id3` carrying `id3` at
/// the start of the fragment that follows it. Version 0 because the IVS
/// Player only reads the 32-bit presentation-time delta.
pub fn emsg_id3_twitch(timescale: u32, id: u32, id3: &[u8]) -> Vec<u8> {
    let mut w = BoxWriter::new();
    w.start_full(b"emsg", 0, 0);
    w.bytes(EMSG_SCHEME_TWITCH_ID3.as_bytes());
    w.bytes(b"\0");
    w.bytes(b"\0");
    w.u32(timescale);
    w.u32(0); // presentation_time_delta: at the fragment's start
    w.u32(0xffff_ffff); // duration unknown
    w.u32(id);
    w.bytes(id3);
    w.end();
    w.buf
}

/// Why the decode times of a fragment cannot be read or moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    #[error("the box at byte {at} does not fit in its parent")]
    Truncated { at: usize },
    #[error("track {track} has no timescale in the init segment")]
    NoTimescale { track: u32 },
    #[error("a decode time of track {track} would leave the range its box can hold")]
    OutOfRange { track: u32 },
}

/// The boxes directly inside `data[from..to]`: (type, start, end), offsets
/// into `data`. Sizes 0 (to the end) and 1 (64-bit) are read too.
fn children(data: &[u8], from: usize, to: usize) -> Result<Vec<([u8; 4], usize, usize)>, Fmp4Error> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let header = data.get(at..at + 8).filter(|_| at + 8 <= to).ok_or(Fmp4Error::Truncated { at })?;
        let size = u64::from(u32::from_be_bytes([header[0], header[1], header[2], header[3]]));
        let kind = [header[4], header[5], header[6], header[7]];
        let (size, header_len) = match size {
            0 => ((to - at) as u64, 8),
            1 => (read_u64(data, at + 8).ok_or(Fmp4Error::Truncated { at })?, 16),
            n => (n, 8),
        };
        let end = usize::try_from(size).ok().and_then(|s| at.checked_add(s)).filter(|&e| e <= to);
        let end = end.filter(|&e| e >= at + header_len).ok_or(Fmp4Error::Truncated { at })?;
        out.push((kind, at + header_len, end));
        at = end;
    }
    Ok(out)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// The first child of type `kind` (its content: after the header).
fn child(data: &[u8], from: usize, to: usize, kind: &[u8; 4]) -> Result<Option<(usize, usize)>, Fmp4Error> {
    Ok(children(data, from, to)?.into_iter().find(|(k, _, _)| k == kind).map(|(_, s, e)| (s, e)))
}

/// Each track's media timescale, from an init segment (`moov` > `trak` >
/// `tkhd`'s track id and `mdia` > `mdhd`'s timescale).
pub fn timescales(init: &[u8]) -> Result<Vec<(u32, u32)>, Fmp4Error> {
    let mut out = Vec::new();
    for (kind, start, end) in children(init, 0, init.len())? {
        if &kind != b"moov" {
            continue;
        }
        for (kind, start, end) in children(init, start, end)? {
            if &kind != b"trak" {
                continue;
            }
            let (Some((tkhd, _)), Some((mdia, mdia_end))) =
                (child(init, start, end, b"tkhd")?, child(init, start, end, b"mdia")?)
            else {
                continue;
            };
            let Some((mdhd, _)) = child(init, mdia, mdia_end, b"mdhd")? else { continue };
            // Version 1 has 64-bit creation and modification times before the field.
            let skip = |at: usize| if init.get(at) == Some(&1) { 20 } else { 12 };
            let track = read_u32(init, tkhd + skip(tkhd)).ok_or(Fmp4Error::Truncated { at: tkhd })?;
            let timescale = read_u32(init, mdhd + skip(mdhd)).ok_or(Fmp4Error::Truncated { at: mdhd })?;
            out.push((track, timescale));
        }
    }
    Ok(out)
}

/// The decode times one track's samples cover in a run of fragments, in
/// the track's timescale: from the first `tfdt` to the end of its last sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpan {
    pub track_id: u32,
    pub start: u64,
    pub end: u64,
}

/// One `traf`: its track, where its `tfdt` value is (and whether 64-bit),
/// and the summed duration of its samples.
struct Traf {
    track: u32,
    tfdt_at: usize,
    wide: bool,
    duration: u64,
}

fn trafs(data: &[u8]) -> Result<Vec<Traf>, Fmp4Error> {
    let mut out = Vec::new();
    for (kind, start, end) in children(data, 0, data.len())? {
        if &kind != b"moof" {
            continue;
        }
        for (kind, start, end) in children(data, start, end)? {
            if &kind != b"traf" {
                continue;
            }
            let (Some((tfhd, _)), Some((tfdt, _))) = (child(data, start, end, b"tfhd")?, child(data, start, end, b"tfdt")?)
            else {
                continue;
            };
            let truncated = Fmp4Error::Truncated { at: tfhd };
            let flags = read_u32(data, tfhd).ok_or(truncated)? & 0x00ff_ffff;
            let track = read_u32(data, tfhd + 4).ok_or(truncated)?;
            // default-sample-duration follows base-data-offset and sample-description-index when present.
            let default_at = tfhd + 8 + if flags & 0x01 != 0 { 8 } else { 0 } + if flags & 0x02 != 0 { 4 } else { 0 };
            let default_duration = if flags & 0x08 != 0 { read_u32(data, default_at).ok_or(truncated)? } else { 0 };
            let mut duration = 0u64;
            for (kind, run, run_end) in children(data, start, end)? {
                if &kind != b"trun" {
                    continue;
                }
                let truncated = Fmp4Error::Truncated { at: run };
                let flags = read_u32(data, run).ok_or(truncated)? & 0x00ff_ffff;
                let count = read_u32(data, run + 4).ok_or(truncated)?;
                let mut at = run + 8 + if flags & 0x01 != 0 { 4 } else { 0 } + if flags & 0x04 != 0 { 4 } else { 0 };
                let per_sample = [0x100, 0x200, 0x400, 0x800].iter().filter(|&&f| flags & f != 0).count() * 4;
                if flags & 0x100 == 0 {
                    duration = duration.saturating_add(u64::from(default_duration).saturating_mul(u64::from(count)));
                    continue;
                }
                for _ in 0..count {
                    if at + 4 > run_end {
                        return Err(truncated);
                    }
                    duration = duration.saturating_add(u64::from(read_u32(data, at).ok_or(truncated)?));
                    at += per_sample;
                }
            }
            let wide = data.get(tfdt) == Some(&1);
            out.push(Traf { track, tfdt_at: tfdt + 4, wide, duration });
        }
    }
    Ok(out)
}

fn tfdt_value(data: &[u8], t: &Traf) -> Result<u64, Fmp4Error> {
    let value = if t.wide { read_u64(data, t.tfdt_at) } else { read_u32(data, t.tfdt_at).map(u64::from) };
    value.ok_or(Fmp4Error::Truncated { at: t.tfdt_at })
}

/// Each track's decode-time span over the fragments of `data` (a segment:
/// fragments back to back, `emsg` boxes between them), in the order the
/// tracks first appear.
pub fn track_spans(data: &[u8]) -> Result<Vec<TrackSpan>, Fmp4Error> {
    let mut out: Vec<TrackSpan> = Vec::new();
    for t in trafs(data)? {
        let start = tfdt_value(data, &t)?;
        let end = start.saturating_add(t.duration);
        match out.iter_mut().find(|s| s.track_id == t.track) {
            Some(s) => {
                s.start = s.start.min(start);
                s.end = s.end.max(end);
            }
            None => out.push(TrackSpan { track_id: t.track, start, end }),
        }
    }
    Ok(out)
}

/// A move of decode times: `ticks` of a `timescale` Hz clock (either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    pub ticks: i64,
    pub timescale: u32,
}

impl Shift {
    /// The same move in a `timescale` Hz clock, to the nearest tick.
    pub fn in_timescale(self, timescale: u32) -> i64 {
        let from = i128::from(self.timescale.max(1));
        let scaled = i128::from(self.ticks) * i128::from(timescale);
        let rounded = (scaled + scaled.signum() * from / 2) / from;
        i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
    }
}

/// Move every decode time in `data` (fragments of the tracks `init`
/// describes) by `shift`: each `tfdt`, in its track's timescale, and the
/// presentation time of each version-1 `emsg` (version 0 ones are relative
/// to their fragment). Nothing is changed unless every time can move.
pub fn shift_decode_times(data: &mut [u8], init: &[u8], shift: Shift) -> Result<(), Fmp4Error> {
    let timescales = timescales(init)?;
    let mut writes: Vec<(usize, bool, u64)> = Vec::new();
    for t in trafs(data)? {
        let timescale = timescales.iter().find(|(id, _)| *id == t.track).map(|(_, ts)| *ts);
        let by = shift.in_timescale(timescale.ok_or(Fmp4Error::NoTimescale { track: t.track })?);
        let moved = i128::from(tfdt_value(data, &t)?) + i128::from(by);
        let fits = if t.wide { u64::try_from(moved).is_ok() } else { u32::try_from(moved).is_ok() };
        let moved = u64::try_from(moved).ok().filter(|_| fits).ok_or(Fmp4Error::OutOfRange { track: t.track })?;
        writes.push((t.tfdt_at, t.wide, moved));
    }
    for (kind, start, _) in children(data, 0, data.len())? {
        if &kind != b"emsg" || data.get(start) != Some(&1) {
            continue;
        }
        let truncated = Fmp4Error::Truncated { at: start };
        let timescale = read_u32(data, start + 4).ok_or(truncated)?;
        let moved = i128::from(read_u64(data, start + 8).ok_or(truncated)?) + i128::from(shift.in_timescale(timescale));
        // An event time does not belong to a track: 0 stands for "no track".
        writes.push((start + 8, true, u64::try_from(moved).map_err(|_| Fmp4Error::OutOfRange { track: 0 })?));
    }
    for (at, wide, value) in writes {
        let slot = if wide { data.get_mut(at..at + 8) } else { data.get_mut(at..at + 4) };
        match (slot, wide) {
            (Some(slot), true) => slot.copy_from_slice(&value.to_be_bytes()),
            // Checked above: fits in 32 bits.
            (Some(slot), false) => slot.copy_from_slice(&(value as u32).to_be_bytes()),
            (None, _) => return Err(Fmp4Error::Truncated { at }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i + 8 <= data.len() {
            let size = u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]) as usize;
            out.push((String::from_utf8_lossy(&data[i + 4..i + 8]).into_owned(), size));
            if size < 8 {
                break;
            }
            i += size;
        }
        assert_eq!(i, data.len(), "boxes tile the buffer");
        out
    }

    #[test]
    fn fragment_boxes_tile_and_offsets_point_into_mdat() {
        let v = [Sample { duration: 3000, keyframe: true, data: vec![1; 10] }];
        let a = [Sample { duration: 1024, keyframe: true, data: vec![2; 5] }];
        let f = fragment(
            7,
            &[
                TrackRun { track_id: 1, base_decode_time: 0, samples: &v },
                TrackRun { track_id: 2, base_decode_time: 0, samples: &a },
            ],
        );
        let b = boxes(&f);
        assert_eq!(b.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["moof", "mdat"]);
        let moof_len = b[0].1;
        assert_eq!(&f[moof_len + 8..moof_len + 18], &[1; 10]);
        assert_eq!(&f[moof_len + 18..], &[2; 5]);
    }
}
