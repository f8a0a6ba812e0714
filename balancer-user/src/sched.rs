//! Tables the daemon builds for the schedulers that need one: a weighted
//! round-robin sequence and a Maglev lookup table. Pure functions.

/// `len` backend indexes in smooth weighted round-robin order (nginx's method:
/// each pick goes to the highest running credit, which then pays the total), so
/// that heavier backends are spread out rather than bunched. Backends of weight
/// 0 never appear; all zero gives an empty sequence.
pub fn round_robin_sequence(weights: &[u32], len: usize) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        seq.push(best as u32);
    }
    seq
}

/// FNV-1a over `data` after `seed`: stable across builds and hosts, which the
/// table must be (both HA nodes build the same one).
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(data) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A Maglev lookup table of size `m` (a prime): entry → backend index (a
/// position in `names`). Each backend walks its own permutation of the
/// entries, named by `names` (stable identities, not positions), taking turns
/// in proportion to its weight, in the order of the names: every node builds
/// the same table for the same backends and weights, however its file lists
/// them and whatever its reload history. Every entry is filled unless all
/// weights are 0 (then every entry is `u32::MAX`).
pub fn maglev_table(names: &[String], weights: &[u32], m: u32) -> Vec<u32> {
    let mut table = vec![u32::MAX; m as usize];
    let max_weight = weights.iter().copied().max().unwrap_or(0);
    if max_weight == 0 {
        return table;
    }
    let mut turns: Vec<usize> = (0..names.len()).collect();
    turns.sort_by(|a, b| names[*a].cmp(&names[*b]));
    let perms: Vec<(u64, u64)> = names
        .iter()
        .map(|n| {
            let offset = fnv1a(0x6d61_676c_6576_0001, n.as_bytes()) % u64::from(m);
            let skip = fnv1a(0x6d61_676c_6576_0002, n.as_bytes()) % u64::from(m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; names.len()];
    let mut credit = vec![0u64; names.len()];
    let mut filled = 0;
    while filled < m {
        for &i in &turns {
            let w = weights[i];
            credit[i] += u64::from(w);
            while credit[i] >= u64::from(max_weight) && filled < m {
                credit[i] -= u64::from(max_weight);
                let (offset, skip) = perms[i];
                loop {
                    let c = ((offset + next[i] * skip) % u64::from(m)) as usize;
                    next[i] += 1;
                    if table[c] == u32::MAX {
                        table[c] = i as u32;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(seq: &[u32], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in seq {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn round_robin_follows_weights_and_interleaves() {
        let seq = round_robin_sequence(&[5, 1, 1], 7);
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0], "nginx's smooth order");
        assert_eq!(
            counts(&round_robin_sequence(&[2, 2, 1], 1000), 3),
            [400, 400, 200]
        );
        assert_eq!(round_robin_sequence(&[1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
        assert!(!round_robin_sequence(&[0, 3], 10).contains(&0));
        assert!(round_robin_sequence(&[0, 0], 10).is_empty());
    }

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("203.0.113.{}:8080", 11 + i))
            .collect()
    }

    #[test]
    fn maglev_fills_every_entry_in_proportion_to_weight() {
        let m = 4093;
        let t = maglev_table(&names(3), &[100, 100, 50], m);
        assert!(t.iter().all(|&b| b < 3));
        let c = counts(&t, 3);
        // 2:2:1 of 4093 is 1637:1637:819; Maglev is within a few percent.
        for (got, want) in c.iter().zip([1637.0, 1637.0, 819.0]) {
            assert!((*got as f64 - want).abs() / want < 0.05, "{c:?}");
        }
        assert_eq!(
            t,
            maglev_table(&names(3), &[100, 100, 50], m),
            "deterministic"
        );
    }

    #[test]
    fn removing_a_backend_moves_little_besides_its_own_entries() {
        let m = 4093;
        let all = names(10);
        let before = maglev_table(&all, &[1; 10], m);
        // backend 9 goes away; the others keep their names
        let after = maglev_table(&all[..9], &[1; 9], m);
        let moved = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != 9 && b != a)
            .count();
        let others = before.iter().filter(|&&b| b != 9).count();
        // Maglev's paper: minimal, not zero, disruption.
        assert!(
            (moved as f64) / (others as f64) < 0.05,
            "{moved} of {others} entries of remaining backends moved"
        );
    }

    #[test]
    fn maglev_picks_the_same_backend_whatever_the_order_of_the_list() {
        let m = 4093;
        let forward = names(5);
        let weights = [100, 50, 100, 10, 100];
        let mut reversed = forward.clone();
        reversed.reverse();
        let reversed_weights: Vec<u32> = weights.iter().rev().copied().collect();
        let a = maglev_table(&forward, &weights, m);
        let b = maglev_table(&reversed, &reversed_weights, m);
        for (entry, (x, y)) in a.iter().zip(&b).enumerate() {
            assert_eq!(
                forward[*x as usize], reversed[*y as usize],
                "entry {entry} names another backend when the list is reversed"
            );
        }
    }

    #[test]
    fn zero_weights_leave_the_table_empty() {
        assert!(
            maglev_table(&names(2), &[0, 0], 7)
                .iter()
                .all(|&b| b == u32::MAX)
        );
        assert!(!maglev_table(&names(2), &[0, 1], 7).contains(&0));
    }
}
