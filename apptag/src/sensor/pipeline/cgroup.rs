//! `--cgroup` selection of packets by the cgroup or container of their process.
use std::path::PathBuf;

/// `--cgroup`: matches by the cgroup id the kernel reported with the task (reliable even for
/// a process gone before /proc could be read), or by the cgroup path and container id from
/// /proc.
#[derive(Default)]
pub(super) struct CgroupFilter {
    /// cgroup ids (directory inodes) at or below the wanted paths.
    inside: std::collections::HashSet<u64>,
    /// ids known to be elsewhere.
    outside: std::collections::HashSet<u64>,
}

impl CgroupFilter {
    pub(super) fn matches(
        &mut self,
        id: u64,
        info: Option<&crate::model::ProcessInfo>,
        wanted: &[String],
    ) -> bool {
        if info.is_some_and(|p| in_cgroups(p, wanted)) {
            return true;
        }
        if id == 0 || self.outside.contains(&id) {
            return false;
        }
        if !self.inside.contains(&id) {
            // A cgroup we have not met: rescan the wanted subtrees (new child cgroups appear
            // at run time). Each unknown id costs one scan, then it is remembered.
            self.inside = subtree_ids(wanted);
            if !self.inside.contains(&id) {
                self.outside.insert(id);
                return false;
            }
        }
        true
    }
}

/// Inode numbers (= cgroup ids) of every cgroup at or below the wanted paths.
fn subtree_ids(wanted: &[String]) -> std::collections::HashSet<u64> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = std::collections::HashSet::new();
    let Some(root) = crate::sys::cgroup2_mount() else {
        return ids;
    };
    let mut stack: Vec<PathBuf> = wanted
        .iter()
        .filter(|w| w.starts_with('/'))
        .map(|w| root.join(w.trim_start_matches('/')))
        .collect();
    while let Some(dir) = stack.pop() {
        if let Ok(m) = std::fs::metadata(&dir) {
            ids.insert(m.ino());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    ids
}

fn in_cgroups(p: &crate::model::ProcessInfo, wanted: &[String]) -> bool {
    wanted.iter().any(|w| {
        let w = w.trim_end_matches('/');
        (!p.container_id.is_empty() && p.container_id.starts_with(w))
            || p.cgroup == w
            || p.cgroup
                .strip_prefix(w)
                .is_some_and(|rest| rest.starts_with('/'))
            || w.is_empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_filter_matches_subtrees_and_container_ids() {
        let p = crate::model::ProcessInfo {
            cgroup: "/system.slice/docker-abc.scope".into(),
            container_id: "abcdef".into(),
            ..Default::default()
        };
        assert!(in_cgroups(&p, &["/system.slice".into()]));
        assert!(in_cgroups(&p, &["/system.slice/".into()]));
        assert!(in_cgroups(&p, &["abc".into()]));
        assert!(!in_cgroups(&p, &["/system.sl".into()]));
        assert!(!in_cgroups(&p, &["/user.slice".into()]));
    }
}
