//! The application log: text for people, or one JSON object per line for log shippers.
//!
//! Outside text (an OAuth error, an OperationOutcome's diagnostics) is already cut down where
//! it is read; as a last guard every text line passes a writer that escapes control
//! characters, so nothing from outside can start a forged line, rewind one or colour it.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `RUST_LOG` chooses levels (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        // serde_json escapes every control character itself.
        LogFormat::Json => builder.json().with_current_span(true).init(),
        LogFormat::Text => {
            let ansi = io::stdout().is_terminal();
            builder.with_ansi(ansi).with_writer(EscapingStdout { ansi }).init()
        }
    }
}

/// Standard output, with control characters escaped in each formatted line.
#[derive(Debug, Clone, Copy)]
struct EscapingStdout {
    /// The formatter's own colour codes are kept (outside ESC bytes are escaped by
    /// tracing-subscriber itself when colours are on).
    ansi: bool,
}

impl<'a> MakeWriter<'a> for EscapingStdout {
    type Writer = EscapingWriter<io::Stdout>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapingWriter { inner: io::stdout(), ansi: self.ansi }
    }
}

/// Escapes control characters in what it is given, except a line's final newline. The fmt
/// layer writes each event with one `write_all`, so "final" is the end of the buffer.
#[derive(Debug)]
pub struct EscapingWriter<W> {
    pub inner: W,
    pub ansi: bool,
}

impl<W: Write> Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, newline) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut out = String::with_capacity(body.len() + 1);
        for c in body.chars() {
            match c {
                '\x1b' if self.ansi => out.push(c),
                '\t' => out.push(c),
                c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                    out.extend(c.escape_default())
                }
                c => out.push(c),
            }
        }
        out.push_str(newline);
        self.inner.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_forged_line_stays_on_its_own_line() {
        let mut w = EscapingWriter { inner: Vec::new(), ansi: false };
        w.write_all(b"WARN refused error=x\n2026-12-03 INFO forged\r\x1b[31mred\x07\n").unwrap();
        let out = String::from_utf8(w.inner).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with('\n'));
        assert!(!out.trim_end_matches('\n').chars().any(char::is_control), "{out}");
        assert!(out.contains("\\n2026-12-03 INFO forged\\r\\u{1b}[31mred"), "{out}");
    }
}
