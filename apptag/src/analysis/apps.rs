//! Which application and process a stream belongs to, on apptag's tagged files: the
//! packets' process ids (EPB option 8) looked up in the process entries and application
//! records, and for untagged packets the application records' sockets.
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::stream::AppInfo;
use crate::dissect::{Addr, FiveTuple};
use crate::model::Provenance;
use crate::report::aggregate::Metadata;

struct Sock {
    local: Addr,
    remote: Option<(Addr, u16)>,
    app: Arc<AppInfo>,
}

/// pid -> application, and (protocol, local port) -> sockets.
#[derive(Default)]
pub struct AppIndex {
    pids: FxHashMap<u32, Arc<AppInfo>>,
    sockets: FxHashMap<(u8, u16), Vec<Sock>>,
}

impl AppIndex {
    /// From a tagged file's metadata; None when the file has no process information.
    pub fn from_metadata(meta: &Metadata) -> Option<Self> {
        if meta.is_empty() {
            return None;
        }
        let mut idx = AppIndex::default();
        let proc_of = |pid: u32| meta.processes.iter().find(|p| p.pid == pid);
        for app in meta.table.apps() {
            let first = app.pids.first().copied().unwrap_or(0);
            let info = Arc::new(AppInfo {
                name: app.name.clone(),
                exe: app.exe.clone(),
                pids: app.pids.clone(),
                process: proc_of(first).map(|p| p.name.clone()).unwrap_or_default(),
                cmdline: app.cmdline.clone(),
                provenance: app.provenance,
            });
            for &pid in &app.pids {
                idx.pids.entry(pid).or_insert_with(|| info.clone());
            }
            for s in &app.sockets {
                // The socket's own attribution says how this stream was tied to the app.
                let info = if s.provenance != Provenance::Unknown && s.provenance != app.provenance
                {
                    Arc::new(AppInfo {
                        provenance: s.provenance,
                        ..(*info).clone()
                    })
                } else {
                    info.clone()
                };
                if s.pid != 0 {
                    idx.pids.entry(s.pid).or_insert_with(|| info.clone());
                }
                let remote = Addr::from_ip(s.remote_addr);
                idx.sockets
                    .entry((s.protocol, s.local_port))
                    .or_default()
                    .push(Sock {
                        local: Addr::from_ip(s.local_addr),
                        remote: (!remote.is_unspecified() && s.remote_port != 0)
                            .then_some((remote, s.remote_port)),
                        app: info,
                    });
            }
        }
        for p in &meta.processes {
            idx.pids.entry(p.pid).or_insert_with(|| {
                Arc::new(AppInfo {
                    name: p.name.clone(),
                    exe: p.exe.clone(),
                    pids: vec![p.pid],
                    process: p.name.clone(),
                    cmdline: p.cmdline.clone(),
                    provenance: Provenance::Unknown,
                })
            });
        }
        Some(idx)
    }

    pub fn by_pid(&self, pid: u32) -> Option<Arc<AppInfo>> {
        self.pids.get(&pid).cloned()
    }

    /// The application whose recorded socket is one end of `t`.
    pub fn by_socket(&self, t: &FiveTuple) -> Option<Arc<AppInfo>> {
        let ends = [
            (t.src, t.src_port, t.dst, t.dst_port),
            (t.dst, t.dst_port, t.src, t.src_port),
        ];
        for (local, lport, remote, rport) in ends {
            let Some(v) = self.sockets.get(&(t.protocol, lport)) else {
                continue;
            };
            let hit = v.iter().find(|s| {
                (s.local.is_unspecified() || s.local == local)
                    && s.remote.is_none_or(|r| r == (remote, rport))
            });
            if let Some(s) = hit {
                return Some(s.app.clone());
            }
        }
        None
    }
}
