//! Strict reading of config objects: every key must be known, and an unknown one is named
//! with the closest known key.

/// The known key closest to `key` by edit distance (for "did you mean").
pub(crate) fn closest<'a>(key: &str, known: &[&'a str]) -> &'a str {
    known
        .iter()
        .min_by_key(|k| distance(key, k))
        .copied()
        .unwrap_or("")
}

/// Levenshtein distance between `a` and `b`, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The first key of `map` that is not in `known` and not metadata (`_…`), as the message
/// "unknown key K (did you mean C?)".
pub(crate) fn unknown_key(
    map: &serde_json::Map<String, serde_json::Value>,
    known: &[&str],
) -> Option<String> {
    map.keys()
        .find(|k| !k.starts_with('_') && !known.contains(&k.as_str()))
        .map(|k| format!("unknown key {k:?} (did you mean {:?}?)", closest(k, known)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_key_is_the_one_a_typo_came_from() {
        let known = [
            "norm_groups",
            "num_heads",
            "num_head_channels",
            "image_size",
        ];
        assert_eq!(closest("norm_group", &known), "norm_groups");
        assert_eq!(closest("num_head_channel", &known), "num_head_channels");
        assert_eq!(closest("imagesize", &known), "image_size");
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
