//! Modules of a virtual GPU: each image's PTX is analysed once (which kernels may be split,
//! and why the others may not). Every member loads the image as it is, for launches that run
//! whole, and, when a kernel may be split, a twin rewritten with a guard that returns for
//! blocks outside the range given in three extra parameters.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::analysis::{self as ptx, Analysis};
use remora_protocol::messages::{
    kernel_order, CtxId, KernelDesc, ModuleId, ParamDesc, Reply, ReplyBody, Request,
};
use remora_protocol::ConnError;
use sha2::Digest;

use super::Vgpu;

/// A kernel as the virtual GPU launches it.
pub struct Kernel {
    pub name: String,
    pub analysis: Analysis,
    /// Where the guard's (dimension, first block, end block) go in the parameter buffer of the
    /// guarded twin; `None` when there is no twin to split with.
    pub guard: Option<[ParamDesc; 3]>,
}

/// A loaded module: its kernels in the order the client numbers them.
pub struct Module {
    pub kernels: Vec<Kernel>,
    /// Whether members hold a guarded twin of it ([`guarded_id`]).
    pub twin: bool,
}

/// Module images the client sent in this session, by their hash: a client sends an image it
/// already sent by its hash alone (as a server caches them). Bounded: the oldest go first.
#[derive(Default)]
pub struct Images {
    by_hash: HashMap<[u8; 32], Arc<[u8]>>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
}

/// Bytes of images a virtual GPU keeps for a client's repeated loads.
const IMAGES_KEPT: usize = 256 << 20;

impl Images {
    /// The image a load names: `payload` when it carries one (then kept), else the one sent
    /// before under `hash`, if kept.
    pub fn image(&mut self, hash: [u8; 32], payload: &[u8]) -> Option<Arc<[u8]>> {
        if payload.is_empty() {
            return self.by_hash.get(&hash).cloned();
        }
        let image: Arc<[u8]> = payload.into();
        if !self.by_hash.contains_key(&hash) && image.len() <= IMAGES_KEPT {
            while self.bytes + image.len() > IMAGES_KEPT {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                if let Some(i) = self.by_hash.remove(&old) {
                    self.bytes -= i.len();
                }
            }
            self.bytes += image.len();
            self.order.push_back(hash);
            self.by_hash.insert(hash, image.clone());
        }
        Some(image)
    }
}

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `_MINOR`.
const CC_MAJOR: u32 = 75;
const CC_MINOR: u32 = 76;

impl Vgpu {
    /// Loads an image on every member: the PTX rewritten with a guard where the image has PTX,
    /// else the image as it is (then no kernel of it is split). `names` are a posted load's
    /// kernel names: members number the kernels of both the image and its twin by them, and
    /// so does the virtual GPU ([`kernel_order`]).
    pub(super) async fn load_module(
        &mut self,
        ctx: CtxId,
        module: ModuleId,
        image: &[u8],
        names: Option<&[String]>,
    ) -> Result<Reply, ConnError> {
        let info = &self.members[0].link.info;
        let dev = self.members[0].placement.gpus[0] as usize;
        let cc = info
            .devices
            .get(dev)
            .map(|d| {
                let a = |x| d.attribute(x).unwrap_or(0).max(0) as u32;
                a(CC_MAJOR) * 10 + a(CC_MINOR)
            })
            .unwrap_or(80);
        let rewritten = ptx::extract_ptx(image, cc)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                let analyses = ptx::analyze_ptx(&text);
                let any = analyses
                    .iter()
                    .any(|(_, a)| matches!(a, Analysis::Splittable(_)));
                // Only a module with a kernel to split needs its guarded twin.
                let guarded = if any {
                    Some(ptx::guard_ptx(&text)?.into_bytes())
                } else {
                    None
                };
                Ok((analyses, guarded))
            });
        let (analyses, guarded) = rewritten.unwrap_or_else(|why| {
            (
                vec![(
                    String::new(),
                    Analysis::NotSplittable(format!("no PTX to analyse: {why}")),
                )],
                None,
            )
        });
        let hash: [u8; 32] = sha2::Sha256::digest(image).into();
        let original = Request::ModuleLoad {
            ctx,
            module,
            hash,
            kernels: names.map(<[String]>::to_vec),
        };
        let twin = guarded.as_ref().map(|g| {
            let hash: [u8; 32] = sha2::Sha256::digest(g).into();
            (
                Request::ModuleLoad {
                    ctx,
                    module: guarded_id(module),
                    hash,
                    kernels: names.map(<[String]>::to_vec),
                },
                g.as_slice(),
            )
        });
        // Every member loads the image as it is (launches that run whole use it) and, where a
        // kernel may be split, its guarded twin.
        let replies = futures_util::future::join_all((0..self.members.len()).map(|i| {
            let link = &self.members[i].link;
            let original = self.for_member(i, &original);
            let twin = twin.as_ref().map(|(r, g)| (self.for_member(i, r), *g));
            async move {
                let first = link.call(&original, image, None).await?;
                let second = match twin {
                    Some((r, g)) if first.status == 0 => Some(link.call(&r, g, None).await?),
                    _ => None,
                };
                Ok::<_, ConnError>((first, second))
            }
        }))
        .await;
        let mut home = None;
        for r in replies {
            let (first, second) = r?;
            if first.status != 0 {
                return Ok(first);
            }
            if let Some(s) = second.as_ref().filter(|s| s.status != 0) {
                return Ok(s.clone());
            }
            home.get_or_insert((first, second));
        }
        let Some((reply, twin_reply)) = home else {
            return Ok(Reply::ok(ReplyBody::None));
        };
        let ReplyBody::Module { kernels, .. } = &reply.body else {
            return Ok(reply);
        };
        let twin_kernels = match twin_reply.map(|r| r.body) {
            Some(ReplyBody::Module { kernels, .. }) => kernels,
            _ => Vec::new(),
        };
        let mut ours = Vec::with_capacity(kernels.len());
        for (i, at) in kernel_order(names, kernels).into_iter().enumerate() {
            let Some(k) = at.map(|j| &kernels[j]) else {
                // Named by the client, absent from the members' module: launches of it fail
                // there, saying so.
                ours.push(Kernel {
                    name: names.and_then(|n| n.get(i)).cloned().unwrap_or_default(),
                    analysis: Analysis::NotSplittable("not in the members' module".into()),
                    guard: None,
                });
                continue;
            };
            let guard = twin_kernels
                .iter()
                .find(|t| t.name == k.name)
                .and_then(guard_params);
            let analysis = analyses
                .iter()
                .find(|(n, _)| n == &k.name)
                .or_else(|| analyses.iter().find(|(n, _)| n.is_empty()))
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| Analysis::NotSplittable("kernel not found in the PTX".into()));
            let analysis = match (&analysis, guard) {
                (Analysis::Splittable(_), None) => {
                    Analysis::NotSplittable("the members' kernel has no guard".into())
                }
                _ => analysis,
            };
            ours.push(Kernel {
                name: k.name.clone(),
                analysis,
                guard,
            });
        }
        self.modules.insert(
            module,
            Module {
                kernels: ours,
                twin: guarded.is_some(),
            },
        );
        Ok(reply)
    }
}

/// The handle under which members hold a module's guarded twin: the client's with the top bit
/// set (the client's handles never have it).
pub fn guarded_id(module: ModuleId) -> ModuleId {
    ModuleId(module.0 | 1 << 63)
}

/// Where the guard's parameters sit in the guarded twin's parameter buffer (its last three).
fn guard_params(k: &KernelDesc) -> Option<[ParamDesc; 3]> {
    let n = ptx::GUARD_PARAMS as usize;
    let tail = k.params.get(k.params.len().checked_sub(n)?..)?;
    Some([tail[0], tail[1], tail[2]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_sent_before_are_found_by_hash_and_the_oldest_go_first() {
        let mut kept = Images::default();
        assert!(kept.image([1; 32], &[]).is_none(), "never sent");
        assert_eq!(&*kept.image([1; 32], b"ptx").unwrap(), b"ptx");
        assert_eq!(&*kept.image([1; 32], &[]).unwrap(), b"ptx");
        let big = vec![0u8; IMAGES_KEPT - 2];
        kept.image([2; 32], &big).unwrap();
        assert!(kept.image([1; 32], &[]).is_none(), "evicted to make room");
        assert_eq!(kept.image([2; 32], &[]).unwrap().len(), big.len());
    }
}
