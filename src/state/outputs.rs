//! A deployed resource's stack outputs, as its record keeps them: name → value, sorted by
//! name, in one vector of exactly their number.
//!
//! A record lives as long as the daemon: at 50,000 instances a `BTreeMap` (one node of
//! eleven slots, about 0.5 KiB, for a stack of one output) made the records' largest part.
//! This keeps the map's reading interface (`get`, `iter`, `len`, serialized as a JSON
//! object in name order) at the size of what it holds.

use std::collections::BTreeMap;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap as _;

/// Stack outputs: name → value, sorted by name, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs(Vec<(String, String)>);

impl Outputs {
    /// The value of output `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&String> {
        self.position(name).ok().map(|i| &self.0[i].1)
    }

    /// Whether output `name` exists.
    #[must_use]
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// How many outputs there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The outputs (name, value), in name order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(pair)
    }

    /// The output names, in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    /// Sets output `name` to `value`; returns the value it replaced.
    pub fn insert(&mut self, name: String, value: String) -> Option<String> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (name, value));
                None
            }
        }
    }

    /// The outputs as a map (what rendering contexts take).
    #[must_use]
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(name))
    }

    /// From pairs in any order; of a name given twice, the last value stays (as a map's
    /// `insert` and a JSON object read into a map keep it).
    fn from_pairs(mut pairs: Vec<(String, String)>) -> Self {
        // Stable: equal names keep their order, so the last given is the last of its run.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        out.shrink_to_fit();
        Self(out)
    }
}

/// The iterator of [`Outputs::iter`].
pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, String)>,
    fn(&(String, String)) -> (&String, &String),
>;

fn pair((k, v): &(String, String)) -> (&String, &String) {
    (k, v)
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = (&'a String, &'a String);
    type IntoIter = Iter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(String, String)> for Outputs {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from_pairs(iter.into_iter().collect())
    }
}

impl From<BTreeMap<String, String>> for Outputs {
    fn from(map: BTreeMap<String, String>) -> Self {
        // Sorted and unique already.
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(map.len());
        pairs.extend(map);
        Self(pairs)
    }
}

impl<const N: usize> From<[(String, String); N]> for Outputs {
    fn from(pairs: [(String, String); N]) -> Self {
        Self::from_pairs(pairs.into())
    }
}

impl std::ops::Index<&str> for Outputs {
    type Output = String;
    fn index(&self, name: &str) -> &String {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no output {name:?}"),
        }
    }
}

impl serde::Serialize for Outputs {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Outputs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = Outputs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of output names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Outputs, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(pair) = map.next_entry::<String, String>()? {
                    pairs.push(pair);
                }
                Ok(Outputs::from_pairs(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn reads_and_writes_as_the_map_it_replaces() {
        let pairs = [("Zeta", "z"), ("Alpha", "a"), ("Mid", "m"), ("Alpha", "a2")];
        let expected = map(&pairs);
        let outputs: Outputs = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        // The last value of a name given twice stays, as with a map.
        assert_eq!(outputs.to_map(), expected);
        assert_eq!(outputs.len(), 3);
        assert_eq!(outputs.get("Alpha").map(String::as_str), Some("a2"));
        assert_eq!(outputs["Mid"], "m");
        assert!(outputs.get("alpha").is_none());
        assert!(!outputs.contains_key("Nope"));
        let order: Vec<&String> = outputs.keys().collect();
        assert_eq!(order, expected.keys().collect::<Vec<_>>());
        // JSON: the same text as the map's (the store's column is read by older code too).
        let text = serde_json::to_string(&outputs).expect("serialize");
        assert_eq!(text, serde_json::to_string(&expected).expect("serialize"));
        let back: Outputs = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, outputs);
        // A JSON object with a name twice reads as a map reads it: the last wins.
        let twice: Outputs = serde_json::from_str(r#"{"B":"1","A":"x","B":"2"}"#).expect("read");
        let as_map: BTreeMap<String, String> =
            serde_json::from_str(r#"{"B":"1","A":"x","B":"2"}"#).expect("read");
        assert_eq!(twice.to_map(), as_map);
        assert!(serde_json::from_str::<Outputs>(r#"{"A":1}"#).is_err());
        assert_eq!(Outputs::from(expected.clone()), outputs);
    }

    #[test]
    fn insert_keeps_the_order_and_replaces_a_value() {
        let mut outputs = Outputs::default();
        assert!(outputs.is_empty());
        assert_eq!(outputs.insert("b".into(), "1".into()), None);
        assert_eq!(outputs.insert("a".into(), "2".into()), None);
        assert_eq!(outputs.insert("b".into(), "3".into()), Some("1".into()));
        let pairs: Vec<(&String, &String)> = outputs.iter().collect();
        assert_eq!(
            pairs,
            vec![
                (&"a".to_string(), &"2".to_string()),
                (&"b".to_string(), &"3".to_string())
            ]
        );
    }
}
