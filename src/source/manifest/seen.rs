//! The URLs a manifest has listed so far, to pass repeats over, in memory that does not
//! grow with the manifest: a fixed-size Bloom filter answers "never seen" for almost every
//! new URL, and only its hits (every repeat, and a few false positives) are confirmed
//! exactly against a spill file in the temporary folder that holds each distinct URL with
//! its first line. A false positive costs one lookup; a URL is never taken for a repeat
//! unless the very same URL was listed before.
//!
//! Memory: the filter (32 MiB, touched as it fills), one partly filled chunk of entries per
//! partition (at most about 7 MiB) and a 1 MiB write buffer. Disk: about 28 bytes plus the
//! URL's length per distinct URL, removed when the manifest is done (the file is unlinked
//! from the start).

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// log2 of the filter's size in bits: 2^28 bits = 32 MiB. At ten million distinct URLs
/// (27 bits each) and [`PROBES`] probes, about one new URL in 30,000 is a false positive.
const FILTER_BITS_LOG2: u32 = 28;
/// Bits set (and tested) per URL.
const PROBES: u32 = 7;
/// The spill is split by hash into this many partitions, so that a lookup reads only
/// one of them: about 10,000 entries (280 kB) each at ten million distinct URLs.
const PARTITIONS: usize = 1024;
/// Entries a partition gathers in memory before they are written out as one chunk.
const CHUNK_ENTRIES: usize = 256;
/// Bytes of the spill held before they are written to the file.
const WRITE_BUFFER: usize = 1 << 20;

/// One distinct URL: its hash, the line that listed it first, and where its text is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    line: u64,
    at: u64,
    len: u32,
}

const ENTRY_BYTES: usize = 28;

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.hash.to_le_bytes());
        out.extend_from_slice(&self.line.to_le_bytes());
        out.extend_from_slice(&self.at.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Entry {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(&b[24..28]);
        Entry {
            hash: u64_at(0),
            line: u64_at(8),
            at: u64_at(16),
            len: u32::from_le_bytes(len),
        }
    }
}

/// The entries of one hash partition: chunks already in the spill, and the newest ones.
#[derive(Default)]
struct Partition {
    chunks: Vec<(u64, u32)>,
    fresh: Vec<Entry>,
}

/// An append-only temporary file read back at offsets; the newest bytes are still in
/// `pending`. Created at the first write out, so a small manifest never touches the disk.
struct Spill {
    file: Option<File>,
    written: u64,
    pending: Vec<u8>,
    /// Bytes held before they are written out.
    limit: usize,
}

impl Spill {
    fn io(source: std::io::Error) -> Error {
        Error::Io {
            path: std::env::temp_dir().join("(cfimg's list of the manifest's URLs)"),
            source,
        }
    }

    fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Appends `bytes`; returns their offset.
    fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.end();
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= self.limit {
            self.write_out()?;
        }
        Ok(at)
    }

    fn write_out(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            none => none.insert(tempfile::tempfile().map_err(Spill::io)?),
        };
        file.write_all(&self.pending).map_err(Spill::io)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Reads `len` bytes at `at` into `out` (a record is never split between the file and
    /// `pending`: `pending` is written out whole).
    fn read(&self, at: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        if at >= self.written {
            let start = (at - self.written) as usize;
            let bytes = self.pending.get(start..start + len).ok_or_else(|| {
                Spill::io(std::io::Error::other("a read past the end of the spill"))
            })?;
            out.extend_from_slice(bytes);
            return Ok(());
        }
        out.resize(len, 0);
        match &self.file {
            Some(f) => f.read_exact_at(out, at).map_err(Spill::io),
            None => Err(Spill::io(std::io::Error::other("the spill has no file"))),
        }
    }
}

/// The URLs seen so far (see the module's comment).
pub(super) struct Seen {
    filter: Vec<u64>,
    filter_bits_log2: u32,
    partitions: Vec<Partition>,
    chunk_entries: usize,
    spill: Spill,
    hash: fn(&str) -> u64,
    scratch: Vec<u8>,
    /// Filter hits that turned out to be new URLs (for tests and curiosity).
    false_positives: u64,
}

impl Default for Seen {
    fn default() -> Seen {
        Seen::with_sizes(
            FILTER_BITS_LOG2,
            PARTITIONS,
            CHUNK_ENTRIES,
            WRITE_BUFFER,
            sip,
        )
    }
}

/// SipHash with fixed keys: the same URL hashes the same way all run long.
fn sip(url: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    url.hash(&mut h);
    h.finish()
}

impl Seen {
    fn with_sizes(
        filter_bits_log2: u32,
        partitions: usize,
        chunk_entries: usize,
        write_buffer: usize,
        hash: fn(&str) -> u64,
    ) -> Seen {
        let words = (1usize << filter_bits_log2).div_ceil(64);
        Seen {
            // Zeroed by the allocator: pages are touched (and count) only as bits are set.
            filter: vec![0u64; words],
            filter_bits_log2,
            partitions: (0..partitions).map(|_| Partition::default()).collect(),
            chunk_entries,
            spill: Spill {
                file: None,
                written: 0,
                pending: Vec::new(),
                limit: write_buffer,
            },
            hash,
            scratch: Vec::new(),
            false_positives: 0,
        }
    }

    /// The filter's bit positions for a hash (double hashing of its two halves).
    fn probes(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let mask = (1u64 << self.filter_bits_log2) - 1;
        let (a, b) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        (0..u64::from(PROBES)).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) & mask) as usize)
    }

    /// The first line of this URL, if it was listed before; records it otherwise.
    pub(super) fn first_line(&mut self, url: &str, line: u64) -> Result<Option<u64>> {
        let hash = (self.hash)(url);
        let mut all_set = true;
        for bit in self.probes(hash) {
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            all_set &= self.filter[word] & mask != 0;
            self.filter[word] |= mask;
        }
        if all_set {
            if let Some(first) = self.lookup(hash, url)? {
                return Ok(Some(first));
            }
            self.false_positives += 1;
        }
        self.record(hash, url, line)?;
        Ok(None)
    }

    fn partition(&self, hash: u64) -> usize {
        // The high bits: the filter's probes start from the low ones.
        ((hash >> 40) as usize) % self.partitions.len()
    }

    fn record(&mut self, hash: u64, url: &str, line: u64) -> Result<()> {
        let len = u32::try_from(url.len())
            .map_err(|_| Spill::io(std::io::Error::other("a URL longer than 4 GB")))?;
        let at = self.spill.append(url.as_bytes())?;
        let p = self.partition(hash);
        let part = &mut self.partitions[p];
        part.fresh.push(Entry {
            hash,
            line,
            at,
            len,
        });
        if part.fresh.len() >= self.chunk_entries {
            let mut bytes = Vec::with_capacity(part.fresh.len() * ENTRY_BYTES);
            for e in part.fresh.drain(..) {
                e.encode(&mut bytes);
            }
            let count = (bytes.len() / ENTRY_BYTES) as u32;
            let at = self.spill.append(&bytes)?;
            self.partitions[p].chunks.push((at, count));
        }
        Ok(())
    }

    /// The first line of exactly this URL, from the spill.
    fn lookup(&mut self, hash: u64, url: &str) -> Result<Option<u64>> {
        let p = self.partition(hash);
        let mut chunk = Vec::new();
        // Oldest first: a URL is recorded once, so any match is its first line.
        for i in 0..self.partitions[p].chunks.len() {
            let (at, count) = self.partitions[p].chunks[i];
            self.spill
                .read(at, count as usize * ENTRY_BYTES, &mut chunk)?;
            for b in chunk.chunks_exact(ENTRY_BYTES) {
                let e = Entry::decode(b);
                if e.hash == hash && self.same_url(&e, url)? {
                    return Ok(Some(e.line));
                }
            }
        }
        for i in 0..self.partitions[p].fresh.len() {
            let e = self.partitions[p].fresh[i];
            if e.hash == hash && self.same_url(&e, url)? {
                return Ok(Some(e.line));
            }
        }
        Ok(None)
    }

    fn same_url(&mut self, e: &Entry, url: &str) -> Result<bool> {
        if e.len as usize != url.len() {
            return Ok(false);
        }
        self.spill.read(e.at, e.len as usize, &mut self.scratch)?;
        Ok(self.scratch == url.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(i: u64) -> String {
        format!("https://images.example.com/{i}.jpg")
    }

    /// Lists `urls` in order; the first line of each, or `None` where it is new.
    fn run(seen: &mut Seen, urls: &[String]) -> Vec<Option<u64>> {
        urls.iter()
            .enumerate()
            .map(|(i, u)| seen.first_line(u, i as u64 + 1).unwrap())
            .collect()
    }

    /// What a plain map says.
    fn exact(urls: &[String]) -> Vec<Option<u64>> {
        let mut first = std::collections::HashMap::new();
        urls.iter()
            .enumerate()
            .map(|(i, u)| {
                let line = i as u64 + 1;
                match first.get(u) {
                    Some(l) => Some(*l),
                    None => {
                        first.insert(u.clone(), line);
                        None
                    }
                }
            })
            .collect()
    }

    fn with_repeats(n: u64) -> Vec<String> {
        // Every third line repeats an earlier URL; some repeat a repeat.
        (0..n)
            .map(|i| match i % 3 {
                2 => url(i / 2),
                _ => url(i),
            })
            .collect()
    }

    #[test]
    fn every_repeat_is_found_with_its_first_line() {
        let urls = with_repeats(20_000);
        let mut seen = Seen::default();
        let want = exact(&urls);
        assert!(want.iter().filter(|r| r.is_some()).count() > 3_000);
        assert_eq!(run(&mut seen, &urls), want);
    }

    #[test]
    fn a_false_positive_of_a_tiny_filter_never_skips_a_url() {
        // 64 bits for thousands of URLs: nearly every new URL is a filter hit, and the spill
        // (chunks of 4, written out to the file every 4 kB) must say it is new.
        let urls = with_repeats(3_000);
        let mut seen = Seen::with_sizes(6, 8, 4, 4096, sip);
        assert_eq!(run(&mut seen, &urls), exact(&urls));
        assert!(seen.false_positives > 1_500, "{}", seen.false_positives);
        assert!(seen.spill.file.is_some(), "the spill went to disk");
    }

    #[test]
    fn urls_with_the_same_hash_are_told_apart() {
        // Every URL hashes alike: only the exact comparison can tell them apart.
        let urls: Vec<String> = (0..300).map(|i| url(i % 200)).collect();
        let mut seen = Seen::with_sizes(10, 4, 16, 1024, |_| 42);
        assert_eq!(run(&mut seen, &urls), exact(&urls));
        assert_eq!(run(&mut seen, &urls[..1]), vec![Some(1)]);
    }
}
