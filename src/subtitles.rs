//! Audio-description tracks as subtitles: SubRip (`.srt`) and WebVTT (`.vtt`) writers for timed
//! narration cues, with the parsers the tests use to read them back.

use std::fmt::Write as _;
use std::time::Duration;

/// One narration, shown from `start` to `end` (media time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue {
    pub start: Duration,
    pub end: Duration,
    pub text: String,
}

fn clock(t: Duration, sep: char) -> String {
    let ms = t.as_millis();
    let (h, m, s, f) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{sep}{f:03}")
}

/// Cue text on one or more lines, never empty lines (they end a cue) and never `-->`.
fn clean(text: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.trim().replace("-->", "->"))
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        "…".into()
    } else {
        lines.join("\n")
    }
}

/// Renders cues as SubRip.
pub fn to_srt(cues: &[Cue]) -> String {
    let mut out = String::new();
    for (i, c) in cues.iter().enumerate() {
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            clock(c.start, ','),
            clock(c.end, ','),
            clean(&c.text)
        );
    }
    out
}

/// Renders cues as WebVTT (text HTML-escaped as the format requires).
pub fn to_vtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for c in cues {
        let text = clean(&c.text)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            clock(c.start, '.'),
            clock(c.end, '.'),
            text
        );
    }
    out
}

fn parse_clock(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (hms, frac) = s.split_once([',', '.'])?;
    let parts: Vec<u64> = hms
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (h, m, sec) = match parts[..] {
        [h, m, s] => (h, m, s),
        [m, s] => (0, m, s),
        _ => return None,
    };
    if frac.len() != 3 || m >= 60 || sec >= 60 {
        return None;
    }
    Some(Duration::from_millis(
        ((h * 60 + m) * 60 + sec) * 1000 + frac.parse::<u64>().ok()?,
    ))
}

fn parse_blocks<'a>(
    blocks: impl Iterator<Item = &'a str>,
    numbered: bool,
) -> Result<Vec<Cue>, String> {
    let mut cues = vec![];
    for (i, block) in blocks.filter(|b| !b.trim().is_empty()).enumerate() {
        let mut lines = block.lines();
        if numbered {
            let n = lines.next().ok_or("empty cue")?;
            if n.trim() != (i + 1).to_string() {
                return Err(format!("cue {}: bad number {n:?}", i + 1));
            }
        }
        let timing = lines
            .next()
            .ok_or(format!("cue {}: no timing line", i + 1))?;
        let (a, b) = timing
            .split_once("-->")
            .ok_or(format!("cue {}: bad timing {timing:?}", i + 1))?;
        let start = parse_clock(a).ok_or(format!("cue {}: bad start {a:?}", i + 1))?;
        let end = parse_clock(b).ok_or(format!("cue {}: bad end {b:?}", i + 1))?;
        let text: Vec<&str> = lines.collect();
        if text.is_empty() {
            return Err(format!("cue {}: no text", i + 1));
        }
        cues.push(Cue {
            start,
            end,
            text: text.join("\n"),
        });
    }
    Ok(cues)
}

/// Parses SubRip text (strict: numbered cues, `HH:MM:SS,mmm` timings, text present).
pub fn parse_srt(s: &str) -> Result<Vec<Cue>, String> {
    parse_blocks(s.replace("\r\n", "\n").split("\n\n"), true)
}

/// Parses WebVTT text (strict: `WEBVTT` header, `HH:MM:SS.mmm` timings, text present).
pub fn parse_vtt(s: &str) -> Result<Vec<Cue>, String> {
    let s = s.replace("\r\n", "\n");
    let body = s.strip_prefix("WEBVTT").ok_or("missing WEBVTT header")?;
    let mut blocks = body.split("\n\n");
    blocks.next(); // header block
    parse_blocks(blocks, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cues() -> Vec<Cue> {
        vec![
            Cue {
                start: Duration::from_millis(0),
                end: Duration::from_millis(2500),
                text: "A desk with a laptop.".into(),
            },
            Cue {
                start: Duration::from_millis(3_723_004),
                end: Duration::from_millis(3_725_000),
                text: "Sign: <EXIT> & stairs --> left\n\nsecond line".into(),
            },
        ]
    }

    #[test]
    fn srt_round_trips_and_formats_times() {
        let s = to_srt(&cues());
        assert!(s.starts_with(
            "1\n00:00:00,000 --> 00:00:02,500\nA desk with a laptop.\n\n2\n01:02:03,004 --> "
        ));
        let back = parse_srt(&s).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].start, Duration::from_millis(3_723_004));
        assert_eq!(back[1].text, "Sign: <EXIT> & stairs -> left\nsecond line");
    }

    #[test]
    fn vtt_round_trips_with_escaping() {
        let v = to_vtt(&cues());
        assert!(v.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\n"));
        assert!(v.contains("&lt;EXIT&gt; &amp; stairs"));
        let back = parse_vtt(&v).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].end, Duration::from_millis(2500));
    }

    #[test]
    fn parsers_reject_malformed_files() {
        assert!(parse_srt("1\n00:00:01,000 -> 00:00:02,000\nx\n").is_err());
        assert!(parse_srt("2\n00:00:01,000 --> 00:00:02,000\nx\n").is_err());
        assert!(parse_vtt("00:00:01.000 --> 00:00:02.000\nx\n").is_err());
        assert!(parse_vtt("WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n").is_err());
        assert!(parse_srt("1\n00:61:01,000 --> 00:00:02,000\nx\n").is_err());
    }
}
