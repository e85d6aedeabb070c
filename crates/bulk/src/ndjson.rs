//! An NDJSON output file read line by line: at most one line (capped) and one network chunk
//! are held at a time, whatever the file's size.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;

use crate::error::transport;
use crate::BulkError;

/// The resources of one output file, in order.
pub struct NdjsonReader {
    chunks: BoxStream<'static, Result<Bytes, BulkError>>,
    buffer: Vec<u8>,
    /// Where the unread part of the buffer starts.
    start: usize,
    /// Where the search for the next newline resumes (what is before it has none).
    scanned: usize,
    line: u64,
    max_line: usize,
    bytes: u64,
    finished: bool,
}

impl std::fmt::Debug for NdjsonReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NdjsonReader")
            .field("line", &self.line)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl NdjsonReader {
    pub(crate) fn from_response(response: reqwest::Response, max_line: usize) -> Self {
        let chunks = response.bytes_stream().map(|c| c.map_err(transport)).boxed();
        Self::from_stream(chunks, max_line)
    }

    /// A reader over any stream of byte chunks (tests, files already on disk).
    pub fn from_stream(
        chunks: BoxStream<'static, Result<Bytes, BulkError>>,
        max_line: usize,
    ) -> Self {
        Self {
            chunks,
            buffer: Vec::new(),
            start: 0,
            scanned: 0,
            line: 0,
            max_line,
            bytes: 0,
            finished: false,
        }
    }

    /// Lines read so far.
    pub fn lines(&self) -> u64 {
        self.line
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next resource; `None` at the end. A line that is not a JSON object with a
    /// `resourceType` is [`BulkError::BadLine`] and reading can go on; a line over the cap or a
    /// broken connection ends the file.
    pub async fn next(&mut self) -> Option<Result<Value, BulkError>> {
        loop {
            if let Some(range) = self.next_line() {
                self.line += 1;
                let text = trim(&self.buffer[range]);
                if text.is_empty() {
                    continue;
                }
                return Some(parse(text, self.line));
            }
            if self.finished {
                return None;
            }
            if self.buffer.len() - self.start > self.max_line {
                self.finished = true;
                self.buffer.clear();
                (self.start, self.scanned) = (0, 0);
                return Some(Err(BulkError::LineTooLong {
                    line: self.line + 1,
                    limit: self.max_line,
                }));
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => {
                    // What was consumed goes before the buffer grows: it holds one partial
                    // line and one chunk at most.
                    self.buffer.drain(..self.start);
                    self.scanned -= self.start;
                    self.start = 0;
                    self.bytes += chunk.len() as u64;
                    self.buffer.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    // A cut-off connection leaves a partial line: not a resource to read.
                    self.finished = true;
                    self.buffer.clear();
                    (self.start, self.scanned) = (0, 0);
                    return Some(Err(e));
                }
                None => self.finished = true,
            }
        }
    }

    /// The next complete line in the buffer (the last one may lack its newline).
    fn next_line(&mut self) -> Option<std::ops::Range<usize>> {
        match self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let end = self.scanned + at;
                let line = self.start..end;
                self.start = end + 1;
                self.scanned = self.start;
                Some(line)
            }
            None if self.finished && self.start < self.buffer.len() => {
                let line = self.start..self.buffer.len();
                self.start = self.buffer.len();
                self.scanned = self.start;
                Some(line)
            }
            None => {
                self.scanned = self.buffer.len();
                None
            }
        }
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
    let end = line.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &line[start..end]
}

fn parse(text: &[u8], line: u64) -> Result<Value, BulkError> {
    match serde_json::from_slice::<Value>(text) {
        Ok(value) if value.get("resourceType").and_then(Value::as_str).is_some() => Ok(value),
        _ => Err(BulkError::BadLine { line }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn reader(chunks: Vec<&'static str>, max_line: usize) -> NdjsonReader {
        let stream = futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c.as_bytes()))).collect::<Vec<_>>(),
        );
        NdjsonReader::from_stream(stream.boxed(), max_line)
    }

    async fn all(mut reader: NdjsonReader) -> Vec<Result<Value, String>> {
        let mut out = Vec::new();
        while let Some(next) = reader.next().await {
            out.push(next.map_err(|e| e.to_string()));
        }
        out
    }

    #[tokio::test]
    async fn lines_split_across_chunks_crlf_blank_lines_and_no_final_newline() {
        let got = all(reader(
            vec![
                "{\"resourceType\":\"Patient\",\"id\":\"1\"}\r\n{\"resource",
                "Type\":\"Condition\",\"id\":\"2\"}\n\n   \n",
                "{\"resourceType\":\"Encounter\",\"id\":\"3\"}",
            ],
            1024,
        ))
        .await;
        let ids: Vec<&str> =
            got.iter().map(|r| r.as_ref().unwrap()["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["1", "2", "3"]);
    }

    #[tokio::test]
    async fn a_bad_line_is_reported_and_reading_goes_on() {
        let got =
            all(reader(vec!["not json\n[1]\n{\"resourceType\":\"Patient\",\"id\":\"1\"}\n"], 1024))
                .await;
        assert_eq!(got.len(), 3);
        assert!(got[0].as_ref().unwrap_err().contains("line 1"));
        assert!(got[1].as_ref().unwrap_err().contains("line 2"));
        assert!(got[2].is_ok());
    }

    #[tokio::test]
    async fn a_line_over_the_cap_ends_the_file_without_holding_it() {
        let long: &'static str = Box::leak("x".repeat(100).into_boxed_str());
        let got = all(reader(
            vec!["{\"resourceType\":\"Patient\",\"id\":\"1\"}\n", long, long, long],
            150,
        ))
        .await;
        assert!(got[0].is_ok());
        assert!(got[1].as_ref().unwrap_err().contains("longer than 150"), "{got:?}");
        assert_eq!(got.len(), 2);
    }
}
