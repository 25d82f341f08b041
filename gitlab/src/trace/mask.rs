//! Streaming redaction of the job log.
//!
//! Stages run in GitLab Runner's order: token prefixes (`glrt-…` → `glrt-[MASKED]`), then masked
//! phrases (→ `[MASKED]`), then UTF-8 repair (invalid bytes → U+FFFD). Each stage holds back only
//! what a later write could still turn into a match, so a secret split across writes is masked
//! exactly as if it had arrived in one piece.

use serde::{Deserialize, Serialize};

use crate::mask::MASKED;

/// Characters that can follow a token prefix (GitLab Runner's token alphabet).
fn in_token_alphabet(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'=')
}

/// Masks `<prefix><token alphabet>+` as `<prefix>[MASKED]`. Holds back at most a partial prefix;
/// token characters are swallowed as they come. Persisted as it is in [`RedactorState`]: the
/// field names are part of `progress.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PrefixStage {
    prefix: Vec<u8>,
    /// Bytes of `prefix` matched so far (held back).
    matching: usize,
    /// Inside a token body: its characters are being dropped.
    in_token: bool,
    /// At least one token character was dropped since the prefix.
    swallowed: bool,
}

impl PrefixStage {
    fn new(prefix: &str) -> Self {
        PrefixStage {
            prefix: prefix.as_bytes().to_vec(),
            matching: 0,
            in_token: false,
            swallowed: false,
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            self.byte(b, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.in_token {
            if in_token_alphabet(b) {
                self.swallowed = true;
                return;
            }
            self.end_token(out);
        }
        if b == self.prefix[self.matching] {
            self.matching += 1;
            if self.matching == self.prefix.len() {
                out.extend_from_slice(&self.prefix);
                self.matching = 0;
                self.in_token = true;
                self.swallowed = false;
            }
            return;
        }
        // Mismatch: release the held partial prefix, except a suffix of it that may still start
        // a prefix (together with `b`).
        let held = std::mem::take(&mut self.matching);
        let mut candidate: Vec<u8> = self.prefix[..held].to_vec();
        candidate.push(b);
        for start in 0..candidate.len() {
            let tail = &candidate[start..];
            if self.prefix.starts_with(tail) {
                out.extend_from_slice(&candidate[..start]);
                self.matching = tail.len();
                if self.matching == self.prefix.len() {
                    out.extend_from_slice(&self.prefix);
                    self.matching = 0;
                    self.in_token = true;
                    self.swallowed = false;
                }
                return;
            }
        }
        out.extend_from_slice(&candidate);
    }

    fn end_token(&mut self, out: &mut Vec<u8>) {
        if self.swallowed {
            out.extend_from_slice(MASKED.as_bytes());
        }
        self.in_token = false;
        self.swallowed = false;
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.in_token {
            self.end_token(out);
        }
        out.extend_from_slice(&self.prefix[..self.matching]);
        self.matching = 0;
    }
}

/// Masks whole phrases, leftmost-longest. Holds back the tail that is still a proper prefix of
/// some phrase.
#[derive(Debug, Clone)]
struct PhraseStage {
    phrases: Vec<Vec<u8>>,
    /// Whether a byte can start a phrase: a fast skip for the common case.
    first: [bool; 256],
    pending: Vec<u8>,
}

enum Match {
    Full(usize),
    NeedMore,
    None,
}

impl PhraseStage {
    fn new(phrases: &[String]) -> Self {
        let mut phrases: Vec<Vec<u8>> = phrases
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.as_bytes().to_vec())
            .collect();
        phrases.sort();
        phrases.dedup();
        let mut first = [false; 256];
        for p in &phrases {
            first[p[0] as usize] = true;
        }
        PhraseStage {
            phrases,
            first,
            pending: Vec::new(),
        }
    }

    fn match_at(&self, s: &[u8], at_end: bool) -> Match {
        let mut best = 0;
        for p in &self.phrases {
            if s.len() >= p.len() {
                if s.starts_with(p) {
                    best = best.max(p.len());
                }
            } else if !at_end && p.starts_with(s) {
                // A longer phrase may still match here: wait, to mask leftmost-longest.
                return Match::NeedMore;
            }
        }
        if best > 0 {
            Match::Full(best)
        } else {
            Match::None
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if self.phrases.is_empty() {
            out.extend_from_slice(input);
            return;
        }
        self.pending.extend_from_slice(input);
        self.drain(out, false);
    }

    fn drain(&mut self, out: &mut Vec<u8>, at_end: bool) {
        let mut i = 0;
        let mut literal = 0;
        while i < self.pending.len() {
            if !self.first[self.pending[i] as usize] {
                i += 1;
                continue;
            }
            match self.match_at(&self.pending[i..], at_end) {
                Match::Full(len) => {
                    out.extend_from_slice(&self.pending[literal..i]);
                    out.extend_from_slice(MASKED.as_bytes());
                    i += len;
                    literal = i;
                }
                Match::NeedMore => break,
                Match::None => i += 1,
            }
        }
        out.extend_from_slice(&self.pending[literal..i]);
        self.pending.drain(..i);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.drain(out, true);
        out.append(&mut self.pending);
    }
}

/// Replaces invalid UTF-8 with U+FFFD, holding back an incomplete sequence at the end.
#[derive(Debug, Clone, Default)]
struct Utf8Stage {
    pending: Vec<u8>,
}

impl Utf8Stage {
    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(input);
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    out.extend_from_slice(valid.as_bytes());
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.extend_from_slice(valid);
                    match e.error_len() {
                        Some(bad) => {
                            out.extend_from_slice(
                                char::REPLACEMENT_CHARACTER.to_string().as_bytes(),
                            );
                            rest = &after[bad..];
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.pending.clear();
            out.extend_from_slice(char::REPLACEMENT_CHARACTER.to_string().as_bytes());
        }
    }
}

/// The held-back part of a [`Redactor`]: partial token prefixes, the tail that may still become a
/// masked phrase, an incomplete UTF-8 sequence. It holds pieces of secrets: store it as privately
/// as the job payload.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RedactorState {
    prefixes: Vec<PrefixStage>,
    phrase_pending: Vec<u8>,
    utf8_pending: Vec<u8>,
}

/// Never prints the held bytes: they may be the start of a secret.
impl std::fmt::Debug for RedactorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedactorState")
            .field("prefixes", &self.prefixes.len())
            .field("phrase_pending", &self.phrase_pending.len())
            .field("utf8_pending", &self.utf8_pending.len())
            .finish()
    }
}

/// The whole redaction pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Redactor {
    prefixes: Vec<PrefixStage>,
    phrases: PhraseStage,
    utf8: Utf8Stage,
}

/// At most this many prefixes are honoured, as in GitLab Runner.
const MAX_PREFIXES: usize = 10;

impl Redactor {
    pub(crate) fn new(phrases: &[String], token_prefixes: &[String]) -> Self {
        let mut prefixes: Vec<String> = Vec::new();
        for p in token_prefixes.iter().map(|p| p.trim()) {
            if !p.is_empty() && !prefixes.iter().any(|q| q == p) && prefixes.len() < MAX_PREFIXES {
                prefixes.push(p.to_owned());
            }
        }
        // Longest first, so `glrtr-` is seen whole before a shorter prefix could claim part of it.
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Redactor {
            prefixes: prefixes.iter().map(|p| PrefixStage::new(p)).collect(),
            phrases: PhraseStage::new(phrases),
            utf8: Utf8Stage::default(),
        }
    }

    /// Redacts `input`, appending what is final to `out`.
    pub(crate) fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut data = input.to_vec();
        for stage in &mut self.prefixes {
            let mut next = Vec::with_capacity(data.len());
            stage.push(&data, &mut next);
            data = next;
        }
        let mut masked = Vec::with_capacity(data.len());
        self.phrases.push(&data, &mut masked);
        self.utf8.push(&masked, out);
    }

    /// What the stages hold back right now, to persist beside the redacted bytes.
    pub(crate) fn state(&self) -> RedactorState {
        RedactorState {
            prefixes: self.prefixes.clone(),
            phrase_pending: self.phrases.pending.clone(),
            utf8_pending: self.utf8.pending.clone(),
        }
    }

    /// Takes back what [`Redactor::state`] saved, so that the next writes continue exactly where
    /// the saved redactor stopped. `false` (and nothing changed) when the state belongs to a
    /// redactor with other token prefixes.
    pub(crate) fn restore(&mut self, state: &RedactorState) -> bool {
        let fits = state.prefixes.len() == self.prefixes.len()
            && state
                .prefixes
                .iter()
                .zip(&self.prefixes)
                .all(|(saved, stage)| {
                    saved.prefix == stage.prefix && saved.matching < stage.prefix.len()
                });
        if !fits {
            return false;
        }
        // Same prefixes, checked above: the saved stages replace these whole.
        self.prefixes = state.prefixes.clone();
        self.phrases.pending = state.phrase_pending.clone();
        self.utf8.pending = state.utf8_pending.clone();
        true
    }

    /// Flushes everything held back.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        let mut data = Vec::new();
        for i in 0..self.prefixes.len() {
            let mut next = Vec::new();
            self.prefixes[i].push(&data, &mut next);
            self.prefixes[i].finish(&mut next);
            data = next;
        }
        let mut masked = Vec::new();
        self.phrases.push(&data, &mut masked);
        self.phrases.finish(&mut masked);
        self.utf8.push(&masked, out);
        self.utf8.finish(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(phrases: &[&str], prefixes: &[&str], chunks: &[&[u8]]) -> String {
        let phrases: Vec<String> = phrases.iter().map(|s| s.to_string()).collect();
        let prefixes: Vec<String> = prefixes.iter().map(|s| s.to_string()).collect();
        let mut r = Redactor::new(&phrases, &prefixes);
        let mut out = Vec::new();
        for c in chunks {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn phrases_are_masked_whole_and_split() {
        assert_eq!(run(&["s3cr3t"], &[], &[b"a s3cr3t b"]), "a [MASKED] b");
        assert_eq!(
            run(&["s3cr3t"], &[], &[b"a s3c", b"r3", b"t b"]),
            "a [MASKED] b"
        );
        assert_eq!(run(&["s3cr3t"], &[], &[b"s3c", b"r"]), "s3cr");
        // Self-overlapping phrase (a naive streaming matcher leaks here).
        assert_eq!(run(&["aab"], &[], &[b"aa", b"ab"]), "a[MASKED]");
        // Leftmost-longest.
        assert_eq!(run(&["abc", "abcdef"], &[], &[b"xabcdefx"]), "x[MASKED]x");
        assert_eq!(run(&["abc", "abcdef"], &[], &[b"xabcdex"]), "x[MASKED]dex");
    }

    #[test]
    fn token_prefixes_keep_the_prefix() {
        let p = ["glrt-", "glcbt-"];
        assert_eq!(
            run(&[], &p, &[b"t=glrt-abc_DEF.1 ok"]),
            "t=glrt-[MASKED] ok"
        );
        assert_eq!(
            run(&[], &p, &[b"t=gl", b"rt-ab", b"c ok"]),
            "t=glrt-[MASKED] ok"
        );
        assert_eq!(run(&[], &p, &[b"end glcbt-xyz"]), "end glcbt-[MASKED]");
        assert_eq!(run(&[], &p, &[b"just glrt- here"]), "just glrt- here");
        assert_eq!(run(&[], &p, &[b"glglrt-x!"]), "glglrt-[MASKED]!");
        assert_eq!(run(&[], &p, &[b"gl"]), "gl");
    }

    /// The state is persisted in the daemon's state directory (`progress.json`): its JSON shape
    /// must not change, so files written by an earlier drover still load.
    #[test]
    fn the_persisted_state_keeps_its_json_shape() {
        let phrases = vec!["s3cr3t".to_string()];
        let prefixes = vec!["glrt-".to_string(), "gl".to_string()];
        let mut r = Redactor::new(&phrases, &prefixes);
        let mut out = Vec::new();
        r.push(b"x glrt-abc \xe2\x82s3cg", &mut out);
        let json = serde_json::to_string(&r.state()).unwrap();
        let expected = concat!(
            r#"{"prefixes":[{"prefix":[103,108,114,116,45],"matching":1,"in_token":false,"swallowed":false},"#,
            r#"{"prefix":[103,108],"matching":0,"in_token":false,"swallowed":false}],"#,
            r#""phrase_pending":[115,51,99],"utf8_pending":[226,130]}"#
        );
        assert_eq!(json, expected);

        // A state in that shape restores: the rest comes out as if never interrupted.
        let saved: RedactorState = serde_json::from_str(expected).unwrap();
        let mut resumed = Redactor::new(&phrases, &prefixes);
        assert!(resumed.restore(&saved));
        let mut rest = Vec::new();
        resumed.push(b"lrt-xyz s3cr3t ok", &mut rest);
        resumed.finish(&mut rest);
        r.push(b"lrt-xyz s3cr3t ok", &mut out);
        r.finish(&mut out);
        let whole = String::from_utf8(out).unwrap();
        let rest = String::from_utf8(rest).unwrap();
        assert!(
            whole.ends_with(&rest) && !rest.is_empty(),
            "{whole:?} vs {rest:?}"
        );
        assert!(
            !whole.contains("xyz") && !whole.contains("s3cr3t"),
            "{whole:?}"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_split_chars_survive() {
        let euro = "€".as_bytes();
        assert_eq!(run(&[], &[], &[&euro[..1], &euro[1..]]), "€");
        assert_eq!(run(&[], &[], &[b"a\xffb"]), "a\u{fffd}b");
        assert_eq!(run(&[], &[], &[&euro[..2]]), "\u{fffd}");
    }
}
