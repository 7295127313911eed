//! Modules of a virtual GPU: each image's PTX is analysed once (which kernels may be split,
//! and why the others may not) and rewritten with a guard, and the rewritten module is what
//! every member loads.

use super::analysis::{self as guard, Analysis};
use remora_protocol::messages::{
    CtxId, KernelDesc, ModuleId, ParamDesc, Reply, ReplyBody, Request,
};
use remora_protocol::ConnError;
use sha2::Digest;

use super::Vgpu;

/// A kernel as the virtual GPU launches it.
pub struct Kernel {
    pub name: String,
    pub analysis: Analysis,
    /// Where the guard's (dimension, first block, end block) go in the members' parameter
    /// buffer; `None` when the image had no PTX to rewrite.
    pub guard: Option<[ParamDesc; 3]>,
}

/// A loaded module: its kernels in the order the client numbers them.
pub struct Module {
    pub kernels: Vec<Kernel>,
}

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` and `_MINOR`.
const CC_MAJOR: u32 = 75;
const CC_MINOR: u32 = 76;

/// The kernels of PTX `text`, analysed (by name).
fn analyse(text: &str) -> Vec<(String, Analysis)> {
    guard::analyze_ptx(text)
}

impl Vgpu {
    /// Loads an image on every member: the PTX rewritten with a guard where the image has PTX,
    /// else the image as it is (then no kernel of it is split).
    pub(super) async fn load_module(
        &mut self,
        ctx: CtxId,
        module: ModuleId,
        image: &[u8],
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
        let rewritten = guard::extract_ptx(image, cc)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                let guarded = guard::guard_ptx(&text)?;
                Ok((analyse(&text), guarded))
            });
        let (analyses, sent): (Vec<(String, Analysis)>, Vec<u8>) = match rewritten {
            Ok((a, g)) => (a, g.into_bytes()),
            Err(why) => (
                vec![(
                    String::new(),
                    Analysis::NotSplittable(format!("no PTX to analyse: {why}")),
                )],
                image.to_vec(),
            ),
        };
        let guarded = sent.as_slice() != image;
        let hash: [u8; 32] = sha2::Sha256::digest(&sent).into();
        let req = Request::ModuleLoad { ctx, module, hash };
        let replies = futures_util::future::join_all((0..self.members.len()).map(|i| {
            let r = self.for_member(i, &req);
            let link = &self.members[i].link;
            let sent = &sent;
            async move { link.call(&r, sent, None).await }
        }))
        .await;
        let mut home = None;
        for r in replies {
            let r = r?;
            if r.status != 0 {
                return Ok(r);
            }
            home.get_or_insert(r);
        }
        let Some(mut reply) = home else {
            return Ok(Reply::ok(ReplyBody::None));
        };
        let ReplyBody::Module { kernels, .. } = &mut reply.body else {
            return Ok(reply);
        };
        let mut ours = Vec::with_capacity(kernels.len());
        for k in kernels.iter_mut() {
            let guard = if guarded { strip_guard(k) } else { None };
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
        self.modules.insert(module, Module { kernels: ours });
        Ok(reply)
    }
}

/// Removes the guard's parameters from what the client sees of a kernel, returning where they
/// sit in the members' buffer.
fn strip_guard(k: &mut KernelDesc) -> Option<[ParamDesc; 3]> {
    let n = guard::GUARD_PARAMS as usize;
    if k.params.len() < n {
        return None;
    }
    let tail = k.params.split_off(k.params.len() - n);
    Some([tail[0], tail[1], tail[2]])
}
