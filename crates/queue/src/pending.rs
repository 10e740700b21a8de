//! The pending segments: `pending/<SEG>/` for jobs that take nothing but
//! a worker (the plain segments), and `pending/c.<CLASS>/<SEG>/` for the
//! jobs of each class, those that say what they take to run (`needs`,
//! `group`; [`Class`]). A claimer reads the names in `pending/` and passes
//! over every class it can never take without reading a file of it
//! (docs/FORMAT.md, "Classes"); where a job goes is `Queue::place`
//! (push.rs), what a claim walks `Queue::candidates` (claim.rs).

use crate::error::Result;
use crate::fsx;
use crate::names::{Class, Key};
use crate::queue::Queue;
use std::path::PathBuf;

/// A pending segment: the class whose directory holds it (none: it is in
/// `pending/` itself, the plain segments) and its name, the least key it
/// may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seg {
    pub class: Option<Class>,
    pub key: Key,
}

impl Queue {
    /// The directory of a class's segments: `pending/c.<CLASS>/`, or
    /// `pending/` itself for the plain segments.
    pub(crate) fn tree(&self, class: Option<&Class>) -> PathBuf {
        match class {
            None => self.dir("pending"),
            Some(c) => self.dir("pending").join(c.dir_name()),
        }
    }

    /// The directory of a segment.
    pub(crate) fn seg_dir(&self, seg: &Seg) -> PathBuf {
        self.tree(seg.class.as_ref()).join(seg.key.to_string())
    }

    /// What `pending/` holds, from one listing: the plain segments, sorted,
    /// and the classes that have a directory (foreign names are left to gc).
    pub(crate) fn pending_dirs(&self) -> Result<(Vec<Key>, Vec<Class>)> {
        let mut segs = Vec::new();
        let mut classes = Vec::new();
        for n in fsx::list(&self.dir("pending"))? {
            if let Some(k) = Key::parse(&n) {
                segs.push(k);
            } else if let Some(c) = Class::parse(&n) {
                classes.push(c);
            }
        }
        segs.sort();
        classes.sort();
        Ok((segs, classes))
    }

    /// The segment names of a class (none: the plain ones), parsed and
    /// sorted (foreign names are left to gc).
    pub(crate) fn segments_in(&self, class: Option<&Class>) -> Result<Vec<Key>> {
        let mut v: Vec<Key> = fsx::list(&self.tree(class))?.iter().filter_map(|n| Key::parse(n)).collect();
        v.sort();
        Ok(v)
    }

    /// Every segment directory of every class, for the walks that look at
    /// all pending jobs (counts, listings, lookups).
    pub(crate) fn segment_dirs(&self) -> Result<Vec<PathBuf>> {
        let (segs, classes) = self.pending_dirs()?;
        let pending = self.dir("pending");
        let mut out: Vec<PathBuf> = segs.iter().map(|k| pending.join(k.to_string())).collect();
        for c in classes {
            let tree = self.tree(Some(&c));
            out.extend(self.segments_in(Some(&c))?.iter().map(|k| tree.join(k.to_string())));
        }
        Ok(out)
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::{ClaimOpts, DirClaimer};
    use crate::record::{Liveness, State};
    use crate::slots::{Fit, Res};
    use crate::testkit;
    use serde_json::json;
    use std::fs;

    fn opts(fit: Option<Fit>) -> ClaimOpts {
        ClaimOpts { lease_ms: 60_000, worker_id: None, liveness: Liveness::Flock, fit }
    }

    /// Totals and free slots alike: `[(gpu, 2)]`, groups as `@name`.
    fn fit(total: &[(&str, u32)], free: &[(&str, u32)]) -> Fit {
        let res = |k: &str| k.strip_prefix('@').map_or_else(|| Res::Slot(k.into()), |g| Res::Group(g.into()));
        let m = |v: &[(&str, u32)]| v.iter().map(|(k, n)| (res(k), *n)).collect();
        Fit { total: m(total), free: m(free) }
    }

    fn job(priority: i32, needs: serde_json::Value, group: Option<&str>) -> serde_json::Value {
        let mut j = json!({"cmd": ["true"], "priority": priority});
        if needs.as_object().is_some_and(|o| !o.is_empty()) {
            j["needs"] = needs;
        }
        if let Some(g) = group {
            j["group"] = json!(g);
        }
        j
    }

    fn files(dir: &std::path::Path) -> Vec<String> {
        let mut v = fsx::list(dir).unwrap();
        v.sort();
        v
    }

    /// Jobs of a class wait in the segments of their class, the queue's
    /// FORMAT says so, and a plain job stays where it always was.
    #[test]
    fn class_jobs_wait_in_their_class_directory() {
        let (_d, q) = testkit::queue();
        testkit::push(&q, &[job(0, json!({}), None)], Default::default());
        assert!(!fs::read_to_string(q.root().join("FORMAT")).unwrap().contains("classes"), "no class: the format is unchanged");
        let gpu = testkit::push(&q, &[job(0, json!({"gpu": 1}), None)], Default::default());
        // A batch (group commit) of two classes.
        let lines: Vec<_> = (0..20).map(|i| if i % 2 == 0 { job(0, json!({"gpu": 2, "mem": 4}), Some("render")) } else { job(0, json!({}), Some("render")) }).collect();
        testkit::push(&q, &lines, Default::default());
        let names = files(&q.dir("pending"));
        assert_eq!(names.iter().filter(|n| Key::parse(n).is_some()).count(), 1, "{names:?}");
        assert_eq!(names.iter().filter(|n| Class::parse(n).is_some()).collect::<Vec<_>>(), ["c.@render", "c.gpu=1", "c.gpu=2,mem=4@render"]);
        let l = q.locate(&gpu[0]).unwrap().unwrap();
        assert!(l.path.starts_with(q.dir("pending").join("c.gpu=1")), "{}", l.path.display());
        assert_eq!(q.counts().unwrap().ready, 22);
        assert_eq!(q.entries(&[State::Pending]).unwrap().len(), 22);
        let rec: serde_json::Value = serde_json::from_slice(&fs::read(q.root().join("FORMAT")).unwrap()).unwrap();
        assert_eq!(rec["features"], json!(["classes"]));
        // This q opens it; one that does not know the feature refuses it (78).
        assert!(Queue::open(q.root()).unwrap().is_some());
        let mut other = rec.clone();
        other["features"] = json!(["classes", "something-newer"]);
        fs::write(q.root().join("FORMAT"), serde_json::to_vec(&other).unwrap()).unwrap();
        assert_eq!(Queue::open(q.root()).unwrap_err().kind, crate::error::Kind::Format);
    }

    /// A claimer passes over a class it can never take without reading its
    /// files: the gpu jobs' files, all more urgent than the plain job and
    /// none of them a job record, are neither claimed nor quarantined by a
    /// claimer without slots (nor counted as work by its idle look); a
    /// claimer with a GPU reads them, and quarantines them.
    #[test]
    fn a_class_a_claimer_cannot_take_is_never_read() {
        let (_d, q) = testkit::queue();
        let gpu: Vec<_> = (0..12).map(|_| job(5, json!({"gpu": 1}), None)).collect();
        let gpu = testkit::push(&q, &gpu, Default::default());
        for id in &gpu {
            fs::write(q.locate(id).unwrap().unwrap().path, b"not a job record").unwrap();
        }
        let idle = q.idle(None, None).unwrap();
        assert_eq!((idle.unfit, idle.due, idle.busy), (12, 0, false));
        let plain = testkit::push(&q, &[job(0, json!({}), None)], Default::default());
        let got = q.claim(5, &opts(None)).unwrap();
        assert_eq!(got.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [plain[0].as_str()]);
        assert!(DirClaimer::new(&q).claim(5, &opts(None)).unwrap().is_empty());
        assert!(files(&q.dir("corrupt")).is_empty(), "nothing of the gpu class was read");
        let gpu_fit = fit(&[("gpu", 1)], &[("gpu", 1)]);
        assert!(q.claim(1, &opts(Some(gpu_fit))).unwrap().is_empty());
        assert_eq!(files(&q.dir("corrupt")).len(), 24, "each gpu job and its note");
    }

    /// The claim order (priority, due time, id) holds across classes, and
    /// the slot rule with it: a job waiting for its slots blocks later jobs
    /// of any class that need them; jobs needing other things, or nothing,
    /// still run. The same jobs in the plain segments (as a q that put every
    /// job there left them) are claimed alike.
    #[test]
    fn claim_order_holds_across_classes() {
        let lines = [
            ("a", job(0, json!({}), None)),
            ("b", job(5, json!({"gpu": 1}), None)),
            ("c", job(3, json!({}), Some("render"))),
            ("d", job(3, json!({}), Some("render"))),
            ("e", job(4, json!({"gpu": 2}), None)),
            ("f", job(1, json!({}), Some("other"))),
            ("g", job(-1, json!({"gpu": 1}), None)),
            ("h", job(2, json!({"tpu": 1}), None)),
            ("i", job(6, json!({"gpu": 1, "mem": 1}), None)),
        ];
        let f = fit(&[("gpu", 2), ("mem", 2), ("@render", 1)], &[("gpu", 2), ("mem", 2), ("@render", 1)]);
        for plain in [false, true] {
            for worker in [false, true] {
                let (_d, q) = testkit::queue();
                let mut names = std::collections::HashMap::new();
                for (n, l) in &lines {
                    // One at a time: ids (and so ties) in this order.
                    names.insert(testkit::push(&q, std::slice::from_ref(l), Default::default()).remove(0), *n);
                }
                if plain {
                    // Every job into one plain segment, as an older q left them.
                    let seg = q.dir("pending").join(Key::new(9999, 0, "00").to_string());
                    fsx::mkdir(&seg).unwrap();
                    for d in q.segment_dirs().unwrap() {
                        for n in fsx::list(&d).unwrap() {
                            fs::rename(d.join(&n), seg.join(&n)).unwrap();
                        }
                    }
                }
                let got = if worker { DirClaimer::new(&q).claim(9, &opts(Some(f.clone()))).unwrap() } else { q.claim(9, &opts(Some(f.clone()))).unwrap() };
                let got: Vec<&str> = got.iter().map(|c| names[&c.id]).collect();
                // i takes a gpu and b the other; e waits for two and blocks
                // g; c takes the render group's place and d waits; h needs
                // what is not here; f's group is not limited.
                assert_eq!(got, ["i", "b", "c", "f", "a"], "plain {plain}, worker {worker}");
            }
        }
    }
}
