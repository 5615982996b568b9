//! Newline-delimited records out of a byte stream.
//!
//! [`LineFramer`] reads into one reusable buffer and hands out batches of
//! the complete lines the last read(s) produced, as ranges of that buffer:
//! no copy and no allocation per line. A record is the bytes between two
//! `\n`, as they are: a `\r` before the `\n` stays (the text format strips
//! it), and an empty line is an empty record. At end of input a last line
//! without `\n` is a record too; nothing after a final `\n` is not.
//!
//! Memory stays bounded whatever the input: the buffer grows only to hold
//! one line of up to `max_record_bytes`. A longer line is never buffered
//! whole: the framer keeps its first [`REJECTED_PREFIX_BYTES`] bytes,
//! skips the rest up to the next `\n` and reports it as
//! [`Frame::Oversized`], in its place between the lines around it.

use std::{fmt, io, ops::Range};

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::control::REJECTED_PREFIX_BYTES;

/// Size of a framer's read buffer unless a longer line needs more.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Most lines in one [`LineBatch`].
pub const MAX_BATCH_LINES: usize = 1024;
/// Most bytes of lines in one [`LineBatch`], unless its one line is longer.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// What [`LineFramer::next`] yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One or more complete lines, in input order.
    Lines(LineBatch<'a>),
    /// A line longer than `max_record_bytes`, which was skipped.
    Oversized {
        /// Its first bytes (at most [`REJECTED_PREFIX_BYTES`]).
        prefix: &'a [u8],
        /// Its length in bytes, the `\n` not counted.
        total_len: u64,
    },
}

/// Complete lines, borrowed from the framer's buffer until its next call.
#[derive(Clone, Copy)]
pub struct LineBatch<'a> {
    buf: &'a [u8],
    lines: &'a [Range<usize>],
}

impl fmt::Debug for LineBatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the buffer: it is mostly other bytes, and large.
        let bytes: usize = self.lines.iter().map(ExactSizeIterator::len).sum();
        f.debug_struct("LineBatch")
            .field("lines", &self.lines.len())
            .field("bytes", &bytes)
            .finish()
    }
}

/// Equal when the lines are, wherever they are buffered.
impl PartialEq for LineBatch<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for LineBatch<'_> {}

impl<'a> LineBatch<'a> {
    /// Number of lines (at least one).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether there are no lines (never true for a batch a framer yields).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The lines, without their `\n`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.lines.iter().map(move |r| &buf[r.clone()])
    }
}

/// Splits a byte stream into lines; see the module docs.
pub struct LineFramer<R> {
    reader: R,
    /// Always initialized to its full length: reads go into `buf[end..]`.
    buf: Vec<u8>,
    /// The size `buf` shrinks back to once empty.
    buffer_bytes: usize,
    /// First byte not handed out yet.
    start: usize,
    /// `buf[start..scanned]` holds no `\n`: the search resumes here, so a
    /// long line arriving in many reads is scanned once.
    scanned: usize,
    /// End of the bytes read.
    end: usize,
    eof: bool,
    max_record_bytes: usize,
    /// While skipping the tail of an oversized line: its length so far.
    skipping: Option<u64>,
    /// Set when the frame to hand out is an oversized line of this length.
    oversized: Option<u64>,
    /// The first bytes of the oversized line.
    prefix: Vec<u8>,
    /// The lines of the batch to hand out, as ranges of `buf`.
    lines: Vec<Range<usize>>,
}

impl<R> fmt::Debug for LineFramer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineFramer")
            .field("buffer_bytes", &self.buf.len())
            .field("buffered", &(self.end - self.start))
            .field("eof", &self.eof)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("skipping", &self.skipping)
            .finish_non_exhaustive()
    }
}

/// What `advance` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// A frame is ready (`lines` or `oversized`).
    Frame,
    /// Nothing to hand out without reading more.
    NeedRead,
    /// The input is over and everything was handed out.
    Eof,
}

impl<R: AsyncRead + Unpin> LineFramer<R> {
    /// A framer over `reader` that accepts lines of up to
    /// `max_record_bytes` bytes (the `\n` not counted).
    pub fn new(reader: R, max_record_bytes: usize) -> LineFramer<R> {
        LineFramer::with_buffer(reader, max_record_bytes, READ_BUFFER_BYTES)
    }

    /// [`new`](Self::new) with a read buffer of `buffer_bytes` (at least 1)
    /// instead of [`READ_BUFFER_BYTES`]. It still grows to hold a line of
    /// `max_record_bytes`, and shrinks back when empty.
    pub fn with_buffer(reader: R, max_record_bytes: usize, buffer_bytes: usize) -> LineFramer<R> {
        let buffer_bytes = buffer_bytes.max(1);
        LineFramer {
            reader,
            buf: vec![0; buffer_bytes],
            buffer_bytes,
            start: 0,
            scanned: 0,
            end: 0,
            eof: false,
            max_record_bytes,
            skipping: None,
            oversized: None,
            prefix: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// The next frame, reading as much as it takes; `None` once the input
    /// is over and every line was handed out.
    ///
    /// # Errors
    ///
    /// A read error. The framer can be called again: it keeps what it
    /// buffered and reads again.
    ///
    /// # Cancellation
    ///
    /// Cancel-safe: dropping the future loses no input; the next call picks
    /// up where it was.
    pub async fn next(&mut self) -> io::Result<Option<Frame<'_>>> {
        loop {
            match self.advance() {
                Ready::Frame => return Ok(Some(self.frame())),
                Ready::NeedRead => self.fill().await?,
                Ready::Eof => return Ok(None),
            }
        }
    }

    /// The next frame that is already buffered, without reading: the
    /// complete lines left when a receiver stops. An unfinished last line
    /// is not a frame (unless the input is over).
    pub fn next_buffered(&mut self) -> Option<Frame<'_>> {
        match self.advance() {
            Ready::Frame => Some(self.frame()),
            Ready::NeedRead | Ready::Eof => None,
        }
    }

    /// Gives back the reader.
    pub fn into_inner(self) -> R {
        self.reader
    }

    fn frame(&self) -> Frame<'_> {
        match self.oversized {
            Some(total_len) => Frame::Oversized {
                prefix: &self.prefix,
                total_len,
            },
            None => Frame::Lines(LineBatch {
                buf: &self.buf,
                lines: &self.lines,
            }),
        }
    }

    /// Finds the next frame in what is buffered. The previous frame is
    /// handed out by now, so its lines are forgotten first.
    fn advance(&mut self) -> Ready {
        self.lines.clear();
        self.oversized = None;

        if let Some(skipped) = self.skipping {
            let pending = &self.buf[self.start..self.end];
            let newline = pending.iter().position(|&b| b == b'\n');
            let tail = newline.unwrap_or(pending.len());
            // The line may have overflowed before its first
            // REJECTED_PREFIX_BYTES arrived.
            let keep = tail.min(REJECTED_PREFIX_BYTES.saturating_sub(self.prefix.len()));
            self.prefix.extend_from_slice(&pending[..keep]);
            let skipped = skipped + tail as u64;
            match newline {
                Some(_) => {
                    self.consume(tail + 1);
                    return self.report_oversized(skipped);
                }
                None => {
                    self.consume(tail);
                    if self.eof {
                        return self.report_oversized(skipped);
                    }
                    self.skipping = Some(skipped);
                    return Ready::NeedRead;
                }
            }
        }

        let mut batch_bytes = 0;
        while self.lines.len() < MAX_BATCH_LINES {
            let Some(at) = self.buf[self.scanned..self.end]
                .iter()
                .position(|&b| b == b'\n')
            else {
                self.scanned = self.end;
                break;
            };
            let line = self.start..self.scanned + at;
            if line.len() > self.max_record_bytes {
                if !self.lines.is_empty() {
                    // Hand out the lines before it first.
                    break;
                }
                self.keep_prefix(line.clone());
                self.consume(line.len() + 1);
                return self.report_oversized(line.len() as u64);
            }
            if !self.lines.is_empty() && batch_bytes + line.len() > MAX_BATCH_BYTES {
                break;
            }
            batch_bytes += line.len();
            self.consume(line.len() + 1);
            self.lines.push(line);
        }
        if !self.lines.is_empty() {
            return Ready::Frame;
        }

        // What is left is one unfinished line.
        let partial = self.start..self.end;
        if partial.len() > self.max_record_bytes {
            // Already too long: keep its prefix, skip the rest.
            self.keep_prefix(partial.clone());
            self.consume(partial.len());
            if self.eof {
                return self.report_oversized(partial.len() as u64);
            }
            self.skipping = Some(partial.len() as u64);
            return Ready::NeedRead;
        }
        if self.eof {
            if partial.is_empty() {
                return Ready::Eof;
            }
            self.consume(partial.len());
            self.lines.push(partial);
            return Ready::Frame;
        }
        Ready::NeedRead
    }

    /// Marks `n` more bytes from `start` as handed out (or skipped).
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = self.scanned.max(self.start);
    }

    fn keep_prefix(&mut self, line: Range<usize>) {
        let keep = line.len().min(REJECTED_PREFIX_BYTES);
        self.prefix.clear();
        self.prefix
            .extend_from_slice(&self.buf[line.start..line.start + keep]);
    }

    fn report_oversized(&mut self, total_len: u64) -> Ready {
        self.skipping = None;
        self.oversized = Some(total_len);
        Ready::Frame
    }

    /// Makes room and reads once.
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.scanned = 0;
            self.end = 0;
            if self.buf.len() > self.buffer_bytes {
                // A long line grew it; give that memory back.
                self.buf.truncate(self.buffer_bytes);
                self.buf.shrink_to_fit();
            }
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scanned -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                // One unfinished line fills the buffer, and it is not longer
                // than max_record_bytes (`advance` skips such lines): grow to
                // hold it, and one byte more, to see it end or overflow.
                let cap = self.max_record_bytes.saturating_add(1);
                let len = self.buf.len().saturating_mul(2).min(cap);
                self.buf.resize(len, 0);
            }
        }
        let n = self.reader.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            self.eof = true;
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        pin::Pin,
        task::{Context, Poll},
    };

    use tokio::io::ReadBuf;

    use super::*;

    /// A reader that returns the given chunks, one per read (a read with a
    /// smaller buffer takes part of a chunk), then EOF.
    struct Chunks(VecDeque<Vec<u8>>);

    impl Chunks {
        fn new<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Chunks {
            // An empty read would mean EOF.
            let chunks = chunks.into_iter().filter(|c| !c.is_empty());
            Chunks(chunks.map(<[u8]>::to_vec).collect())
        }
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let chunks = &mut self.get_mut().0;
            if let Some(chunk) = chunks.front_mut() {
                let n = chunk.len().min(out.remaining());
                out.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Line(Vec<u8>),
        Oversized(Vec<u8>, u64),
    }

    fn line(s: &[u8]) -> Item {
        Item::Line(s.to_vec())
    }

    /// Every frame of `reader`, as batches of items.
    async fn frames(reader: Chunks, max: usize, buffer: usize) -> Vec<Vec<Item>> {
        let mut framer = LineFramer::with_buffer(reader, max, buffer);
        let mut out = Vec::new();
        while let Some(frame) = framer.next().await.unwrap() {
            out.push(match frame {
                Frame::Lines(batch) => {
                    assert!(!batch.is_empty());
                    batch.iter().map(line).collect()
                }
                Frame::Oversized { prefix, total_len } => {
                    vec![Item::Oversized(prefix.to_vec(), total_len)]
                }
            });
            assert!(
                framer.buf.len() <= buffer.max(max.saturating_add(1)),
                "buffer grew to {}",
                framer.buf.len()
            );
        }
        // Stays over.
        assert!(framer.next().await.unwrap().is_none());
        out
    }

    async fn items(reader: Chunks, max: usize, buffer: usize) -> Vec<Item> {
        frames(reader, max, buffer).await.concat()
    }

    /// What a framer must yield: `input` split on `\n`, without the empty
    /// segment after a final `\n`, oversized lines reported.
    fn reference(input: &[u8], max: usize) -> Vec<Item> {
        let mut lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        lines
            .into_iter()
            .map(|l| {
                if l.len() > max {
                    let keep = l.len().min(REJECTED_PREFIX_BYTES);
                    Item::Oversized(l[..keep].to_vec(), l.len() as u64)
                } else {
                    line(l)
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn lines_split_across_reads_at_every_byte_position() {
        let input: &[u8] = b"alpha\nbeta\r\n\n\r\ngamma delta\nlast";
        let want = vec![
            line(b"alpha"),
            line(b"beta\r"),
            line(b""),
            line(b"\r"),
            line(b"gamma delta"),
            line(b"last"),
        ];
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let got = items(Chunks::new([a, b]), 100, READ_BUFFER_BYTES).await;
            assert_eq!(got, want, "cut at {cut}");
            for buffer in [1, 2, 3, 7] {
                let got = items(Chunks::new([a, b]), 100, buffer).await;
                assert_eq!(got, want, "cut at {cut}, buffer {buffer}");
            }
        }
        let bytes = input.chunks(1);
        assert_eq!(items(Chunks::new(bytes), 100, 4).await, want);
    }

    #[tokio::test]
    async fn crlf_is_kept_and_a_final_newline_ends_no_extra_record() {
        let got = items(Chunks::new([&b"a\r\nb\r\n"[..]]), 10, 64).await;
        assert_eq!(got, vec![line(b"a\r"), line(b"b\r")]);
        assert_eq!(items(Chunks::new([]), 10, 64).await, vec![]);
        assert_eq!(
            items(Chunks::new([&b"\n"[..]]), 10, 64).await,
            vec![line(b"")]
        );
        assert_eq!(
            items(Chunks::new([&b"\n\n"[..]]), 10, 64).await,
            vec![line(b""), line(b"")]
        );
        // A final line without newline, also a lone `\r`.
        assert_eq!(
            items(Chunks::new([&b"x\n\r"[..]]), 10, 64).await,
            vec![line(b"x"), line(b"\r")]
        );
    }

    #[tokio::test]
    async fn an_oversized_line_is_reported_in_place_and_its_neighbours_survive() {
        let long = vec![b'x'; 12_345];
        let mut input = b"before\n".to_vec();
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nafter\n");
        let want = vec![
            line(b"before"),
            Item::Oversized(long[..REJECTED_PREFIX_BYTES].to_vec(), 12_345),
            line(b"after"),
        ];
        // All in the buffer at once; in small reads that overflow a small
        // buffer (the skipping path); at the end of input without newline.
        assert_eq!(items(Chunks::new([&input[..]]), 100, 1 << 16).await, want);
        assert_eq!(items(Chunks::new(input.chunks(7)), 100, 64).await, want);
        assert_eq!(items(Chunks::new(input.chunks(1000)), 5000, 16).await, want);
        let cut = input.len() - b"\nafter\n".len();
        assert_eq!(
            items(Chunks::new(input[..cut].chunks(300)), 100, 64).await,
            want[..2]
        );
        // The limit is inclusive; the prefix is the whole line if short.
        let input = b"12345\n123456\n".as_slice();
        assert_eq!(
            items(Chunks::new([input]), 5, 64).await,
            vec![line(b"12345"), Item::Oversized(b"123456".to_vec(), 6)]
        );
    }

    #[tokio::test]
    async fn the_buffer_grows_for_a_long_line_and_shrinks_back() {
        let long = vec![b'y'; 150_000];
        let mut input = long.clone();
        input.extend_from_slice(b"\nshort\n");
        let mut framer = LineFramer::new(Chunks::new(input.chunks(10_000)), 200_000);
        let Some(Frame::Lines(batch)) = framer.next().await.unwrap() else {
            panic!("expected lines")
        };
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&long[..], b"short"]);
        assert!(framer.next().await.unwrap().is_none());
        assert_eq!(framer.buf.len(), READ_BUFFER_BYTES);
    }

    #[tokio::test]
    async fn batches_are_capped_in_lines_and_bytes() {
        let input = "l\n".repeat(5000);
        let batches = frames(Chunks::new([input.as_bytes()]), 10, 1 << 16).await;
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [1024, 1024, 1024, 1024, 904]
        );

        let line_of = |n: usize| {
            let mut l = vec![b'z'; n];
            l.push(b'\n');
            l
        };
        let mut input = Vec::new();
        for _ in 0..30 {
            input.extend(line_of(100_000));
        }
        input.extend(line_of(1_500_000));
        let batches = frames(Chunks::new([&input[..]]), 2_000_000, 1 << 16).await;
        let sizes: Vec<usize> = batches
            .iter()
            .map(|b| {
                b.iter()
                    .map(|i| match i {
                        Item::Line(l) => l.len(),
                        Item::Oversized(..) => panic!("no line is oversized"),
                    })
                    .sum()
            })
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4_500_000);
        assert_eq!(*sizes.last().unwrap(), 1_500_000, "a long line alone");
        assert!(
            sizes
                .iter()
                .all(|&s| s <= MAX_BATCH_BYTES || s == 1_500_000)
        );
    }

    #[tokio::test]
    async fn next_buffered_hands_out_complete_lines_only() {
        let mut framer = LineFramer::new(Chunks::new([&b"a\nb\npart"[..]]), 10);
        assert!(framer.next_buffered().is_none(), "nothing read yet");
        let Some(Frame::Lines(batch)) = framer.next().await.unwrap() else {
            panic!("expected lines")
        };
        assert_eq!(batch.len(), 2);
        assert!(framer.next_buffered().is_none(), "`part` is unfinished");
    }

    /// xorshift64*: enough randomness for test inputs, reproducible by seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
        }
    }

    #[tokio::test]
    async fn random_chunking_equals_splitting_the_whole_input() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let max = 1 + rng.below(300);
            let mut input = Vec::new();
            for _ in 0..rng.below(40) {
                let len = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(8),
                    2 => max - 1 + rng.below(3),
                    _ => rng.below(3 * max),
                };
                for _ in 0..len {
                    input.push(b"ab \r"[rng.below(4)]);
                }
                if rng.below(8) > 0 {
                    input.push(b'\n');
                }
            }
            let mut chunks = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(1 + rng.below(rest.len().min(400)));
                chunks.push(chunk);
                rest = tail;
            }
            let buffer = 1 + rng.below(512);
            let got = items(Chunks::new(chunks), max, buffer).await;
            assert_eq!(
                got,
                reference(&input, max),
                "seed {seed}, max {max}, buffer {buffer}"
            );
        }
    }
}
