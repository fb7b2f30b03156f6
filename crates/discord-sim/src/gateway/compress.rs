//! `compress=zstd-stream`: one zstd stream per connection, flushed after every
//! message so the client can decode each binary frame as it arrives.

use zstd_safe::zstd_sys::ZSTD_EndDirective;
use zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

/// The window Discord's frames declare (2^18 = 256 KiB): what a client must
/// keep of each connection's stream. zstd's default for a stream of unknown
/// length at level 3 is eight times that, which would make a client with
/// many shards hold and walk far more memory than Discord asks of it.
const DISCORD_WINDOW_LOG: u32 = 18;

pub(crate) struct ZstdStream {
    ctx: CCtx<'static>,
}

#[derive(Debug, thiserror::Error)]
#[error("zstd compression failed: {0}")]
pub(crate) struct CompressError(&'static str);

impl ZstdStream {
    pub(crate) fn new() -> Self {
        let mut ctx = CCtx::create();
        ctx.set_parameter(CParameter::WindowLog(DISCORD_WINDOW_LOG))
            .expect(
                "a window log of 18 is within zstd's bounds on every platform (10..=30 at least)",
            );
        Self { ctx }
    }

    pub(crate) fn compress(&mut self, message: &[u8]) -> Result<Vec<u8>, CompressError> {
        // The bound is room enough for the whole flushed message (every
        // call flushes everything, so nothing is carried over): one small
        // allocation per message. Reserving zstd's recommended 128 KiB
        // output size up front instead cost, at the allocator's mmap
        // threshold, a map, page faults and an unmap per dispatch (seen in
        // the simulator's profile under `gatehouse bench gateway`).
        let mut out = Vec::with_capacity(zstd_safe::compress_bound(message.len()) + 64);
        let mut input = InBuffer::around(message);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(CCtx::out_size());
            }
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            let remaining = self
                .ctx
                .compress_stream2(&mut output, &mut input, ZSTD_EndDirective::ZSTD_e_flush)
                .map_err(|code| CompressError(zstd_safe::get_error_name(code)))?;
            if remaining == 0 && input.pos == message.len() {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zstd_safe::DCtx;

    fn decompress(ctx: &mut DCtx<'_>, frame: &[u8]) -> String {
        let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
        let mut input = InBuffer::around(frame);
        while input.pos < frame.len() {
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            ctx.decompress_stream(&mut output, &mut input).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    /// The window a zstd frame declares (RFC 8878, 3.1.1.1): what the
    /// client must keep of the stream to decode it.
    fn declared_window(frame: &[u8]) -> usize {
        assert_eq!(frame[..4], [0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
        let single_segment = frame[4] & 0x20 != 0;
        assert!(!single_segment, "a stream's frame declares a window");
        let descriptor = frame[5];
        let base = 1usize << (10 + (descriptor >> 3));
        base + base / 8 * usize::from(descriptor & 0x07)
    }

    #[test]
    fn frames_declare_the_window_discords_do() {
        // The start of the first frame Discord's gateway sent on a
        // zstd-stream connection (gateway-prd-us-east1), as Twilight's
        // decompressor tests keep it.
        const DISCORD_HELLO: [u8; 6] = [40, 181, 47, 253, 0, 64];
        assert_eq!(declared_window(&DISCORD_HELLO), 256 * 1024);

        let mut encoder = ZstdStream::new();
        let frame = encoder
            .compress(br#"{"t":null,"s":null,"op":10,"d":{"heartbeat_interval":41250}}"#)
            .unwrap();
        assert_eq!(
            declared_window(&frame),
            declared_window(&DISCORD_HELLO),
            "a client keeps this much of each connection's stream to decode it"
        );
    }

    #[test]
    fn each_message_decodes_on_its_own_within_one_stream() {
        let mut encoder = ZstdStream::new();
        let mut decoder = DCtx::create();
        for i in 0..50 {
            let message = format!(
                r#"{{"op":0,"s":{i},"t":"X","d":{{"n":"{}"}}}}"#,
                "y".repeat(i * 40)
            );
            let frame = encoder.compress(message.as_bytes()).unwrap();
            assert_eq!(decompress(&mut decoder, &frame), message);
        }
    }
}
