//! Masking holds whatever the chunking: no secret ever reaches the stored trace.

use drover_gitlab::trace::{TraceBuffer, TraceOptions, limit_exceeded_message};
use proptest::prelude::*;

const PREFIXES: [&str; 4] = ["glpat-", "glrt-", "glrtr-", "glcbt-"];

fn options(phrases: &[String], limit: u64) -> TraceOptions {
    TraceOptions {
        limit_bytes: limit,
        phrases: phrases.to_vec(),
        token_prefixes: PREFIXES.iter().map(|p| p.to_string()).collect(),
    }
}

fn run(opts: &TraceOptions, chunks: &[&[u8]]) -> Vec<u8> {
    let mut buffer = TraceBuffer::new(opts);
    for chunk in chunks {
        buffer.write(chunk);
    }
    buffer.finish();
    buffer.bytes().to_vec()
}

/// Splits `data` at the given cut points (taken modulo its length).
fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Filler drawn from the secrets' own alphabet, so near-misses and overlaps are common.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-d0-2 \n]{0,12}",
        Just("gl".to_string()),
        Just("glrt".to_string()),
        Just("[MASKED]".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn no_split_of_the_stream_ever_leaks_a_secret(
        secrets in prop::collection::vec("[a-d0-2]{6,12}", 1..4),
        tokens in prop::collection::vec(("[0-3]", "[A-Za-z0-9_]{8,20}"), 0..3),
        layout in prop::collection::vec((piece(), 0usize..8), 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        // Build a stream: filler, then a secret or a token, repeatedly.
        let mut stream = String::new();
        let mut token_bodies = Vec::new();
        for (filler, pick) in &layout {
            stream.push_str(filler);
            if *pick < secrets.len() {
                stream.push_str(&secrets[*pick]);
            } else if let Some((prefix, body)) = tokens.get(pick - secrets.len()) {
                let prefix = PREFIXES[prefix.parse::<usize>().unwrap()];
                stream.push_str(prefix);
                stream.push_str(body);
                token_bodies.push(body.clone());
                stream.push(' ');
            }
        }
        let opts = options(&secrets, 1 << 20);
        let whole = run(&opts, &[stream.as_bytes()]);
        let chunked = run(&opts, &split(stream.as_bytes(), &cuts));
        prop_assert_eq!(&chunked, &whole, "masking must not depend on how output is chunked");
        for secret in &secrets {
            prop_assert!(!contains(&whole, secret.as_bytes()), "secret {:?} leaked in {:?}", secret, String::from_utf8_lossy(&whole));
        }
        for body in &token_bodies {
            prop_assert!(!contains(&whole, body.as_bytes()), "token {:?} leaked in {:?}", body, String::from_utf8_lossy(&whole));
        }
    }

    #[test]
    fn the_limit_and_checksum_do_not_depend_on_chunking(
        text in "[a-z€ \n]{0,300}",
        limit in 1u64..200,
        cuts in prop::collection::vec(any::<usize>(), 0..10),
    ) {
        let opts = options(&[], limit);
        let whole = run(&opts, &[text.as_bytes()]);
        let mut buffer = TraceBuffer::new(&opts);
        for chunk in split(text.as_bytes(), &cuts) {
            buffer.write(chunk);
        }
        buffer.finish();
        let message = limit_exceeded_message(limit);
        let kept = buffer.bytes().len() - if buffer.limit_reached() { message.len() } else { 0 };
        prop_assert!(kept as u64 <= limit);
        prop_assert!(std::str::from_utf8(buffer.bytes()).is_ok(), "never splits a character");
        prop_assert_eq!(buffer.checksum(), format!("crc32:{:08x}", crc32fast::hash(buffer.bytes())));
        prop_assert_eq!(buffer.bytes(), &whole[..], "the chunking changes nothing, limit or not");
        if text.len() as u64 >= limit {
            prop_assert!(buffer.bytes().ends_with(message.as_bytes()));
            prop_assert!(text.as_bytes().starts_with(&buffer.bytes()[..kept]));
        } else {
            prop_assert_eq!(buffer.bytes(), text.as_bytes());
        }
    }
}

#[test]
fn a_job_token_and_masked_variables_are_masked_from_a_real_payload() {
    let job: drover_gitlab::api::JobResponse = drover_gitlab::api::decode(
        &std::fs::read(crate::fixtures::path("job-response.json")).unwrap(),
    )
    .unwrap();
    let opts = TraceOptions::for_job(&job, Some(8));
    assert_eq!(opts.limit_bytes, 8 * 1024);
    let out = run(
        &opts,
        &[
            b"pw=s3cr3t-Pa5",
            b"5w0rd url=https://gitlab-ci-token:glcbt-64_xQz3vLmT7bN2pWdR8sYk@host\n",
        ],
    );
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "pw=[MASKED] url=https://gitlab-ci-token:glcbt-[MASKED]@host\n"
    );
}
