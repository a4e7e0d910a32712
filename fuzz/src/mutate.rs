//! A small, seeded, deterministic input mutator for the bounded runs on
//! stable Rust (libFuzzer does its own mutation under `cargo fuzz`).
//!
//! Each step applies one to four of: bit flips, byte sets, inserts and
//! deletes of runs, interesting integers (0, -1, `i64::MAX`, 2^31, …)
//! written little- or big-endian, copies inside the input, and splices
//! with another corpus entry. The same seed always gives the same inputs,
//! so a failure report's seed reproduces it.

/// splitmix64: tiny, fast and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Integers that tend to sit on boundaries.
const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    7,
    16,
    127,
    128,
    255,
    256,
    4096,
    65535,
    65536,
    i32::MAX as i64,
    i32::MIN as i64,
    1 << 31,
    u32::MAX as i64,
    i64::MAX,
    i64::MIN,
];

/// Bytes that matter to the formats fuzzed here (JSON, selectors, protobuf).
const TOKENS: &[&[u8]] = &[
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"\\u0000",
    b"=",
    b"!=",
    b"==",
    b" in (",
    b" notin (",
    b")",
    b"!",
    b"\x00",
    b"\xff",
    b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",
    b"/",
    b"~1",
    b"$patch",
    b"\"op\":\"remove\"",
];

/// Mutates `input` in place, at most `max_len` bytes long; `others` are
/// splice partners (other corpus entries).
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, others: &[Vec<u8>], max_len: usize) {
    let steps = 1 + rng.below(4);
    for _ in 0..steps {
        mutate_once(rng, input, others);
    }
    input.truncate(max_len);
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = data.len();
    match rng.below(10) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let i = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let byte = rng.next_u64() as u8;
            let fill: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.chance(2) {
                        byte
                    } else {
                        rng.next_u64() as u8
                    }
                })
                .collect();
            data.splice(i..i, fill);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(16));
            data.drain(i..i + n);
        }
        4 => {
            let v = INTERESTING[rng.below(INTERESTING.len())];
            let width = [1usize, 2, 4, 8][rng.below(4)];
            let bytes = if rng.chance(2) {
                v.to_le_bytes()[..width].to_vec()
            } else {
                v.to_be_bytes()[8 - width..].to_vec()
            };
            let i = rng.below(len + 1);
            let end = (i + width).min(len);
            if rng.chance(2) {
                data.splice(i..end, bytes);
            } else {
                data.splice(i..i, bytes);
            }
        }
        5 => {
            let t = TOKENS[rng.below(TOKENS.len())];
            let i = rng.below(len + 1);
            data.splice(i..i, t.iter().copied());
        }
        6 if len > 1 => {
            // Copy a run from elsewhere in the input (duplicates fields).
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(32));
            let run = data[from..from + n].to_vec();
            let to = rng.below(len + 1);
            data.splice(to..to, run);
        }
        7 if !others.is_empty() => {
            // Splice: our head, another entry's tail.
            let other = &others[rng.below(others.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 if len > 0 => {
            // Small arithmetic on one byte (lengths, varints, digits).
            let i = rng.below(len);
            let d = 1 + rng.below(16) as u8;
            data[i] = if rng.chance(2) {
                data[i].wrapping_add(d)
            } else {
                data[i].wrapping_sub(d)
            };
        }
        _ => {
            if len > 0 && rng.chance(3) {
                data.truncate(rng.below(len));
            } else {
                data.push(rng.next_u64() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_bounded() {
        let corpus = vec![b"hello world".to_vec(), b"{\"a\":1}".to_vec()];
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut out = Vec::new();
            for i in 0..200 {
                let mut x = corpus[i % 2].clone();
                mutate(&mut rng, &mut x, &corpus, 64);
                assert!(x.len() <= 64);
                out.push(x);
            }
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let changed = run(7)
            .iter()
            .enumerate()
            .filter(|(i, x)| **x != corpus[i % 2])
            .count();
        assert!(changed > 150, "only {changed} of 200 inputs changed");
    }
}
