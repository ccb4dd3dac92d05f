//! BIRD control-socket compatibility for routed.
//!
//! BIRD's `birdc` talks to the daemon over a unix socket with numbered reply lines
//! (`0001 BIRD 2.0 ready.`, `1002-...` continuation lines, `0000` end of reply).
//! This crate will hold the server side of that protocol and the renderers that
//! print routed's state the way `birdc show protocols` does, so tools written for
//! Calico's BIRD keep working. For now it only fixes the reply-code framing.

/// Formats one reply line of the BIRD control protocol: a four-digit code, then
/// `-` when more lines of the same reply follow or a space on the last line.
pub fn format_reply_line(code: u16, more_follows: bool, text: &str) -> String {
    let sep = if more_follows { '-' } else { ' ' };
    format!("{code:04}{sep}{text}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines_follow_bird_framing() {
        assert_eq!(
            format_reply_line(1, false, "BIRD 2.0.12 ready."),
            "0001 BIRD 2.0.12 ready.\n"
        );
        assert_eq!(
            format_reply_line(1002, true, "mesh1 BGP"),
            "1002-mesh1 BGP\n"
        );
    }
}
