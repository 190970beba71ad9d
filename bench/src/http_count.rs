//! Counting HTTP/1.1 messages in a byte stream as it passes through a relay, so a benchmark
//! can count what clients asked a server without trusting the clients' own counters:
//! request lines (`… HTTP/1.1\r\n`) in the client's stream, status lines (`HTTP/1.1 NNN `)
//! in the server's. Fed chunk by chunk as the relay reads them; a line split across two
//! chunks counts once. Pure.
//!
//! It does not parse messages, it looks for the markers: right for streams whose bodies
//! never contain them, as with S3 GETs and PUTs of JSON reports and Garage's XML errors
//! (a marker needs `HTTP/1.1` followed by a CR LF or by a space and three digits).
//! [`RequestTargets`] gives the request lines themselves, and [`request_kind`] names what a
//! request asked of a Ferry bucket (manifest, narinfo, NAR, host report, listing, …), so a
//! benchmark can split what it counted by kind.

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

/// The longest request line [`RequestTargets`] keeps; a longer line (an upload's body line,
/// say) is dropped without being scanned twice.
const LINE_CAP: usize = 4096;

/// Reads the request lines of a client's stream (`GET /bucket/key HTTP/1.1`), the same
/// lines [`RequestLines`] counts.
#[derive(Debug, Default)]
pub struct RequestTargets {
    /// The current line's bytes so far (up to [`LINE_CAP`]).
    line: Vec<u8>,
    /// The current line went past [`LINE_CAP`]: it is not a request line of ours.
    overlong: bool,
}

impl RequestTargets {
    /// The request lines that end in `chunk`, without their ` HTTP/1.1\r\n`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let (part, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            rest = &rest[part.len() + usize::from(ended)..];
            if self.line.len() + part.len() > LINE_CAP {
                self.overlong = true;
                self.line.clear();
            } else if !self.overlong {
                self.line.extend_from_slice(part);
            }
            if ended {
                let marker = &REQUEST_LINE_END[..REQUEST_LINE_END.len() - 1];
                if !self.overlong
                    && let Some(request) = self.line.strip_suffix(marker)
                {
                    found.push(request_line(&String::from_utf8_lossy(request)));
                }
                self.line.clear();
                self.overlong = false;
            }
        }
        found
    }
}

/// The methods [`request_line`] looks for.
const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "DELETE", "POST"];

/// The request line at the end of `line`: `METHOD target`. A body sent without a line end
/// of its own (a PUT's JSON) runs into the next request's line, so the method is the known
/// one the second-last word ends with; without one, `line` as it is.
fn request_line(line: &str) -> String {
    let Some((before, target)) = line.rsplit_once(' ') else {
        return line.to_owned();
    };
    let word = before.rsplit(' ').next().unwrap_or(before);
    match METHODS.iter().find(|m| word.ends_with(*m)) {
        Some(method) => format!("{method} {target}"),
        None => line.to_owned(),
    }
}

/// What a request line (`METHOD /bucket/key?query`, path style, as [`RequestTargets`]
/// gives it) asked of a Ferry bucket: the method, then `manifest`, `narinfo`, `nar`,
/// `nix-cache-info`, `host report`, `list` (a query with `list-type`), `bucket` (the
/// bucket itself) or `other`. Pure.
pub fn request_kind(request: &str) -> String {
    use ferry_schema::layout::{CACHE_INFO_KEY, HOSTS_PREFIX, MANIFEST_KEY, NAR_PREFIX};
    let (method, target) = request.split_once(' ').unwrap_or((request, ""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // Path style: /<bucket>/<key>.
    let key = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map_or("", |(_, key)| key);
    let what = if query.split('&').any(|q| q.starts_with("list-type")) {
        "list"
    } else if key.is_empty() {
        "bucket"
    } else if key == MANIFEST_KEY {
        "manifest"
    } else if key == CACHE_INFO_KEY {
        "nix-cache-info"
    } else if key.ends_with(".narinfo") && !key.contains('/') {
        "narinfo"
    } else if key.starts_with(NAR_PREFIX) {
        "nar"
    } else if key.starts_with(HOSTS_PREFIX) {
        "host report"
    } else {
        "other"
    };
    format!("{method} {what}")
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
    fn request_lines_are_read_whole_however_the_stream_is_split() {
        let want = [
            "GET /status/hosts/a.json?x-id=GetObject",
            "PUT /status/hosts/b.json",
            "GET /status/hosts/c.json",
        ];
        for at in 0..=UP.len() {
            let mut t = RequestTargets::default();
            let mut lines = t.feed(&UP[..at]);
            lines.extend(t.feed(&UP[at..]));
            assert_eq!(lines, want, "split at {at}");
        }
        let mut t = RequestTargets::default();
        let lines: Vec<String> = UP.iter().flat_map(|b| t.feed(&[*b])).collect();
        assert_eq!(lines, want);
    }

    #[test]
    fn a_body_without_a_line_end_does_not_hide_the_next_request() {
        let mut t = RequestTargets::default();
        let stream = b"PUT /b/lease HTTP/1.1\r\ncontent-length: 27\r\n\r\n{\"purpose\":\"ferry bucket\"}DELETE /b/lease HTTP/1.1\r\n\r\nPUT /b/probe HTTP/1.1\r\n\r\nprobeGET /b/manifest.json HTTP/1.1\r\n\r\n";
        assert_eq!(
            t.feed(stream),
            [
                "PUT /b/lease",
                "DELETE /b/lease",
                "PUT /b/probe",
                "GET /b/manifest.json"
            ]
        );
    }

    #[test]
    fn an_overlong_line_is_no_request_line() {
        let mut t = RequestTargets::default();
        let mut body = vec![b'x'; LINE_CAP + 10];
        body.extend_from_slice(b" HTTP/1.1\r\nGET /b/manifest.json HTTP/1.1\r\n");
        assert_eq!(t.feed(&body), ["GET /b/manifest.json"]);
    }

    #[test]
    fn requests_are_named_by_what_they_ask_of_the_bucket() {
        for (line, kind) in [
            ("GET /ferry/manifest.json?x-id=GetObject", "GET manifest"),
            ("PUT /ferry/manifest.json", "PUT manifest"),
            ("GET /ferry/nix-cache-info", "GET nix-cache-info"),
            (
                "GET /ferry/0c9s4d6ry6l4yxfkz9a2bzhhvbq0rw4j.narinfo",
                "GET narinfo",
            ),
            ("HEAD /ferry/nar/1abc.nar.zst", "HEAD nar"),
            ("PUT /ferry-status/hosts/host-a.json", "PUT host report"),
            ("GET /ferry-status/?list-type=2&prefix=hosts%2F", "GET list"),
            ("GET /ferry-status?list-type=2", "GET list"),
            ("HEAD /ferry/", "HEAD bucket"),
            ("GET /ferry/manifests/2026.json", "GET other"),
        ] {
            assert_eq!(request_kind(line), kind, "{line}");
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
