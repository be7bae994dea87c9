//! One copy of each distinct config schema in a registry.
//!
//! A manager's plugins usually declare the same schema, or one of a few,
//! and a JSON schema as a `serde_json::Value` is a tree of maps that costs
//! far more than the rest of a plugin's metadata; sharing it is most of
//! what keeps a large registry small. Schemas are compared in key order,
//! so a shared schema serialises exactly as the one it stands for.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use serde_json::Value;

thread_local! {
    /// The schema this thread gave a plugin last, for [`share_recent`].
    static RECENT: std::cell::RefCell<Weak<Value>> = const { std::cell::RefCell::new(Weak::new()) };
}

/// The schema this thread built last when `schema` equals it, else `schema`
/// (which becomes the one remembered).
///
/// A manager builds its plugins' metadata one after another, usually with
/// the same schema: comparing each with the previous one while both are
/// still in cache, and freeing the new copy at once, is several times
/// cheaper than the registry comparing 100,000 cold copies later. The
/// registry's [`SchemaPool`] still shares whatever this did not.
pub(crate) fn share_recent(schema: Arc<Value>) -> Arc<Value> {
    let shared = RECENT.try_with(|recent| {
        let mut recent = recent.borrow_mut();
        match recent.upgrade() {
            Some(last) if Arc::ptr_eq(&last, &schema) || same(&last, &schema) => last,
            _ => {
                *recent = Arc::downgrade(&schema);
                Arc::clone(&schema)
            }
        }
    });
    // During the thread's teardown the cache is gone: keep the schema as is.
    shared.unwrap_or(schema)
}

/// The distinct schemas seen, by hash.
#[derive(Debug, Default)]
pub(crate) struct SchemaPool {
    by_hash: HashMap<u64, Vec<Arc<Value>>>,
    /// The last schema shared: consecutive plugins usually repeat it.
    last: Option<Arc<Value>>,
}

impl SchemaPool {
    /// The pool's copy of `schema` (added when it is new).
    pub(crate) fn share(&mut self, schema: &Arc<Value>) -> Arc<Value> {
        if let Some(last) = &self.last
            && (Arc::ptr_eq(last, schema) || same(last, schema))
        {
            return Arc::clone(last);
        }
        let bucket = self.by_hash.entry(hash(schema)).or_default();
        let shared = match bucket.iter().find(|s| Arc::ptr_eq(s, schema) || same(s, schema)) {
            Some(found) => Arc::clone(found),
            None => {
                bucket.push(Arc::clone(schema));
                Arc::clone(schema)
            }
        };
        self.last = Some(Arc::clone(&shared));
        shared
    }

    /// Forgets the schemas no plugin uses any more.
    pub(crate) fn prune(&mut self) {
        self.last = None;
        self.by_hash.retain(|_, bucket| {
            bucket.retain(|s| Arc::strong_count(s) > 1);
            !bucket.is_empty()
        });
    }

    /// How many distinct schemas are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_hash.values().map(Vec::len).sum()
    }
}

/// Equal as JSON text: like `==`, but objects must also list their keys in
/// the same order.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        _ => a == b,
    }
}

fn hash(v: &Value) -> u64 {
    fn feed(v: &Value, h: &mut impl Hasher) {
        match v {
            Value::Null => h.write_u8(0),
            Value::Bool(b) => {
                h.write_u8(1);
                b.hash(h);
            }
            Value::Number(n) => {
                h.write_u8(2);
                match (n.as_u64(), n.as_i64(), n.as_f64()) {
                    (Some(u), _, _) => u.hash(h),
                    (_, Some(i), _) => i.hash(h),
                    (_, _, Some(f)) => f.to_bits().hash(h),
                    _ => {}
                }
            }
            Value::String(s) => {
                h.write_u8(3);
                s.hash(h);
            }
            Value::Array(a) => {
                h.write_u8(4);
                h.write_usize(a.len());
                a.iter().for_each(|v| feed(v, h));
            }
            Value::Object(m) => {
                h.write_u8(5);
                h.write_usize(m.len());
                for (k, v) in m {
                    k.hash(h);
                    feed(v, h);
                }
            }
        }
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    feed(v, &mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_schemas_are_shared_and_different_ones_kept_apart() {
        let mut pool = SchemaPool::default();
        let a = Arc::new(json!({"type": "object", "properties": {"x": {"type": "integer"}}}));
        let a2 = Arc::new(json!({"type": "object", "properties": {"x": {"type": "integer"}}}));
        let b = Arc::new(json!({"type": "object", "properties": {"y": {"type": "integer"}}}));
        let sa = pool.share(&a);
        assert!(Arc::ptr_eq(&pool.share(&a2), &sa));
        let sb = pool.share(&b);
        assert!(!Arc::ptr_eq(&sa, &sb));
        // Not only the last one is found.
        assert!(Arc::ptr_eq(&pool.share(&a2), &sa));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn key_order_is_part_of_a_schema() {
        let mut pool = SchemaPool::default();
        let ab = Arc::new(json!({"a": 1, "b": 2}));
        let ba = Arc::new(json!({"b": 2, "a": 1}));
        let s1 = pool.share(&ab);
        let s2 = pool.share(&ba);
        assert!(!Arc::ptr_eq(&s1, &s2));
        assert_eq!(s2.to_string(), r#"{"b":2,"a":1}"#);
    }

    #[test]
    fn numbers_of_different_kinds_stay_apart() {
        let mut pool = SchemaPool::default();
        let int = Arc::new(json!({"default": 1}));
        let float = Arc::new(json!({"default": 1.0}));
        let s1 = pool.share(&int);
        let s2 = pool.share(&float);
        assert_eq!(s1.to_string(), r#"{"default":1}"#);
        assert_eq!(s2.to_string(), r#"{"default":1.0}"#);
    }

    #[test]
    fn a_schema_equal_to_the_last_built_is_shared_at_once() {
        let schema = || json!({"type": "object", "properties": {"x": {"type": "integer"}}});
        let a = share_recent(Arc::new(schema()));
        let b = share_recent(Arc::new(schema()));
        assert!(Arc::ptr_eq(&a, &b));
        // A different one is kept, and becomes the one compared with.
        let c = share_recent(Arc::new(
            json!({"properties": {"x": {"type": "integer"}}, "type": "object"}),
        ));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(
            c.to_string(),
            r#"{"properties":{"x":{"type":"integer"}},"type":"object"}"#
        );
        let d = share_recent(Arc::new(
            json!({"properties": {"x": {"type": "integer"}}, "type": "object"}),
        ));
        assert!(Arc::ptr_eq(&c, &d));
        // Once nothing holds it, it is not brought back.
        drop((c, d));
        let e = share_recent(Arc::new(
            json!({"properties": {"x": {"type": "integer"}}, "type": "object"}),
        ));
        assert_eq!(Arc::strong_count(&e), 1);
    }

    #[test]
    fn each_thread_remembers_its_own() {
        let a = share_recent(Arc::new(json!({"t": 1})));
        let b = std::thread::spawn(|| share_recent(Arc::new(json!({"t": 1}))))
            .join()
            .unwrap_or_else(|_| panic!("the thread panicked"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(a, b);
    }

    #[test]
    fn prune_drops_only_unused_schemas() {
        let mut pool = SchemaPool::default();
        let kept = pool.share(&Arc::new(json!({"k": 1})));
        drop(pool.share(&Arc::new(json!({"gone": 1}))));
        pool.prune();
        assert_eq!(pool.len(), 1);
        assert!(Arc::ptr_eq(&pool.share(&Arc::new(json!({"k": 1}))), &kept));
    }
}
