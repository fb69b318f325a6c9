//! The latency figure: how far the frame on screen is behind the server's
//! clock. Plain arithmetic, so it builds and is tested on the host too.

/// Seconds between the frame on screen (its program date-time, Unix ms) and
/// the server's clock now (`now_ms` on this device plus `server_offset_ms`).
/// `None` when the figure cannot be right (a negative or absurd value means
/// the clocks or the timestamps are off, not that the stream is early).
pub fn latency_secs(now_ms: f64, server_offset_ms: f64, pdt_ms: f64) -> Option<f64> {
    let latency = (now_ms + server_offset_ms - pdt_ms) / 1000.0;
    (latency.is_finite() && (0.0..600.0).contains(&latency)).then_some(latency)
}

#[cfg(test)]
mod tests {
    use super::latency_secs;

    #[test]
    fn latency_is_the_server_clock_minus_the_frame_time() {
        assert_eq!(latency_secs(10_000.0, 500.0, 9_300.0), Some(1.2));
        assert_eq!(latency_secs(10_000.0, -2_000.0, 7_000.0), Some(1.0), "a device clock ahead of the server");
        assert_eq!(latency_secs(10_000.0, 0.0, 11_000.0), None, "a frame from the future: clocks off");
        assert_eq!(latency_secs(10_000.0, 0.0, f64::NAN), None);
    }
}
