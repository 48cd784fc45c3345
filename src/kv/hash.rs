//! Block hashes compatible with Dynamo's KV router: XXH3-64, seed 1337.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Seed Dynamo's router uses for every block and chain hash.
pub const HASH_SEED: u64 = 1337;

/// Hash of one block's token ids (u32 little-endian), independent of its position.
pub fn block_hash(tokens: &[u32]) -> u64 {
    if cfg!(target_endian = "little") {
        // The in-memory bytes are already little-endian: hash them in place.
        return xxh3_64_with_seed(bytemuck::cast_slice(tokens), HASH_SEED);
    }
    let mut bytes = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    xxh3_64_with_seed(&bytes, HASH_SEED)
}

/// Sequence hash of a block: the first block's is its block hash; later ones chain the parent's.
pub fn chain_hash(parent: Option<u64>, block_hash: u64) -> u64 {
    match parent {
        None => block_hash,
        Some(p) => {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&p.to_le_bytes());
            bytes[8..].copy_from_slice(&block_hash.to_le_bytes());
            xxh3_64_with_seed(&bytes, HASH_SEED)
        }
    }
}

/// Sequence hashes of every full block of `tokens`, extending `hashes` (already-hashed blocks kept).
pub fn extend_sequence_hashes(hashes: &mut Vec<u64>, tokens: &[u32], block_size: usize) {
    let full = tokens.len() / block_size;
    for i in hashes.len()..full {
        let bh = block_hash(&tokens[i * block_size..(i + 1) * block_size]);
        let parent = hashes.last().copied();
        hashes.push(chain_hash(parent, bh));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_prefix_and_matches_definition() {
        let a: Vec<u32> = (0..8).collect();
        let mut b = a.clone();
        b[0] = 99;
        let mut ha = Vec::new();
        extend_sequence_hashes(&mut ha, &a, 4);
        let mut hb = Vec::new();
        extend_sequence_hashes(&mut hb, &b, 4);
        assert_eq!(ha.len(), 2);
        // Same second block, different first block: different sequence hash.
        assert_eq!(block_hash(&a[4..]), block_hash(&b[4..]));
        assert_ne!(ha[1], hb[1]);
        assert_eq!(ha[0], block_hash(&a[..4]));
        let mut bytes = ha[0].to_le_bytes().to_vec();
        bytes.extend_from_slice(&block_hash(&a[4..]).to_le_bytes());
        assert_eq!(ha[1], xxh3_64_with_seed(&bytes, 1337));
        // A partial block is not hashed; extending later keeps earlier hashes.
        let mut h = Vec::new();
        extend_sequence_hashes(&mut h, &a[..6], 4);
        assert_eq!(h.len(), 1);
        extend_sequence_hashes(&mut h, &a, 4);
        assert_eq!(h, ha);
    }

    /// Known answers of NVIDIA Dynamo 1.6.1's `compute_block_hash_for_seq` (block size 64):
    /// the per-block hashes its router matches KV events with.
    #[test]
    fn block_hashes_equal_dynamos() {
        let hashes = |tokens: &[u32]| -> Vec<u64> { tokens.chunks(64).map(block_hash).collect() };
        let a: Vec<u32> = (1..=128).collect();
        assert_eq!(
            hashes(&a),
            [17_732_852_320_395_450_624, 16_977_986_247_603_081_716]
        );
        let b: Vec<u32> = (0..192u32).map(|i| (7 + 37 * i) % 151_643).collect();
        assert_eq!(
            hashes(&b),
            [
                17_106_244_237_794_711_426,
                7_178_736_877_499_942_347,
                1_266_680_660_956_685_374
            ]
        );
    }
}
