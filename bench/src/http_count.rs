//! Counting HTTP/1.1 messages in a byte stream as it passes through a relay, so a benchmark
//! can count what clients asked a server without trusting the clients' own counters:
//! request lines (`… HTTP/1.1\r\n`) in the client's stream, status lines (`HTTP/1.1 NNN `)
//! in the server's. Fed chunk by chunk as the relay reads them; a line split across two
//! chunks counts once. Pure.
//!
//! It does not parse messages, it looks for the markers: right for streams whose bodies
//! never contain them, as with S3 GETs and PUTs of JSON reports and Garage's XML errors
//! (a marker needs `HTTP/1.1` followed by a CR LF or by a space and three digits).

/// Ends every HTTP/1.1 request line.
const REQUEST_LINE_END: &[u8] = b" HTTP/1.1\r\n";
/// Starts every HTTP/1.1 status line; three digits follow.
const STATUS_LINE_START: &[u8] = b"HTTP/1.1 ";
/// A status line's marker with its code.
const STATUS_LEN: usize = 12;

/// Counts the request lines of a client's stream.
#[derive(Debug, Default)]
pub struct RequestLines {
    tail: Vec<u8>,
}

impl RequestLines {
    /// The request lines that end in `chunk` (the next bytes of the stream).
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let mut count = 0;
        scan(&mut self.tail, chunk, REQUEST_LINE_END.len(), |m| {
            if m == REQUEST_LINE_END {
                count += 1;
            }
        });
        count
    }
}

/// Reads the status codes of a server's stream.
#[derive(Debug, Default)]
pub struct StatusLines {
    tail: Vec<u8>,
}

impl StatusLines {
    /// The status codes of the status lines that end in `chunk`, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u16> {
        let mut codes = Vec::new();
        scan(&mut self.tail, chunk, STATUS_LEN, |m| {
            let (start, digits) = m.split_at(STATUS_LINE_START.len());
            if start == STATUS_LINE_START && digits.iter().all(u8::is_ascii_digit) {
                codes.push(
                    digits
                        .iter()
                        .fold(0u16, |code, d| code * 10 + u16::from(d - b'0')),
                );
            }
        });
        codes
    }
}

/// Calls `found` with every window of `len` bytes of `tail + chunk`, then keeps the last
/// `len - 1` bytes as the next tail. A window lies at most `len - 1` bytes in the tail, so
/// each is seen in exactly one call.
fn scan(tail: &mut Vec<u8>, chunk: &[u8], len: usize, mut found: impl FnMut(&[u8])) {
    tail.extend_from_slice(chunk);
    for window in tail.windows(len) {
        found(window);
    }
    let keep = tail.len().min(len - 1);
    tail.drain(..tail.len() - keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &[u8] = b"GET /status/hosts/a.json?x-id=GetObject HTTP/1.1\r\nhost: x\r\nif-none-match: \"e1\"\r\n\r\nPUT /status/hosts/b.json HTTP/1.1\r\ncontent-length: 13\r\n\r\n{\"v\":\"HTTP\"}\nGET /status/hosts/c.json HTTP/1.1\r\n\r\n";
    const DOWN: &[u8] = b"HTTP/1.1 304 Not Modified\r\netag: \"e1\"\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"a\":\"HTTP/1.1\"}\nHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

    #[test]
    fn every_split_of_the_streams_counts_the_same() {
        for at in 0..=UP.len() {
            let mut r = RequestLines::default();
            assert_eq!(r.feed(&UP[..at]) + r.feed(&UP[at..]), 3, "split at {at}");
        }
        for at in 0..=DOWN.len() {
            let mut s = StatusLines::default();
            let mut codes = s.feed(&DOWN[..at]);
            codes.extend(s.feed(&DOWN[at..]));
            assert_eq!(codes, [304, 200, 404], "split at {at}");
        }
    }

    #[test]
    fn byte_by_byte_and_empty_chunks() {
        let mut s = StatusLines::default();
        let mut codes = s.feed(b"");
        for b in DOWN {
            codes.extend(s.feed(std::slice::from_ref(b)));
        }
        assert_eq!(codes, [304, 200, 404]);
        let mut r = RequestLines::default();
        assert_eq!(UP.iter().map(|b| r.feed(&[*b])).sum::<u64>(), 3);
    }
}
