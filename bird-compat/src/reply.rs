//! A reply as numbered lines, and its encoding on the wire: `CODE-text` when the code changes
//! and more lines follow, ` text` when the code repeats, `CODE text` on the last line.

/// The lines of one reply, in order; the last one ends it (its code is 0xxx, 8xxx or 9xxx).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    lines: Vec<(u16, String)>,
}

impl Reply {
    pub fn new() -> Reply {
        Reply::default()
    }

    /// A one-line reply (`0000 `, `9001 syntax error`...).
    pub fn single(code: u16, text: impl Into<String>) -> Reply {
        let mut reply = Reply::new();
        reply.push(code, text);
        reply
    }

    pub fn push(&mut self, code: u16, text: impl Into<String>) {
        self.lines.push((code, text.into()));
    }

    pub fn lines(&self) -> &[(u16, String)] {
        &self.lines
    }

    /// The reply as BIRD writes it. An empty reply (never built by the renderers) still ends,
    /// with `0000 `, so no client waits for more.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let mut previous: Option<u16> = None;
        let last = self.lines.len().saturating_sub(1);
        for (i, (code, text)) in self.lines.iter().enumerate() {
            if i == last {
                out.push_str(&crate::format_reply_line(*code, false, text));
            } else if previous == Some(*code) {
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            } else {
                out.push_str(&crate::format_reply_line(*code, true, text));
            }
            previous = Some(*code);
        }
        if self.lines.is_empty() {
            out.push_str("0000 \n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_codes_continue_and_the_last_line_ends() {
        let mut r = Reply::new();
        r.push(2002, "name");
        r.push(1002, "a");
        r.push(1002, "b");
        r.push(0, "");
        assert_eq!(r.encode(), "2002-name\n1002-a\n b\n0000 \n");
        assert_eq!(Reply::new().encode(), "0000 \n");
        assert_eq!(
            Reply::single(8001, "Network not found").encode(),
            "8001 Network not found\n"
        );
    }
}
