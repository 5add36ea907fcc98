//! Accumulation over inputs on the device (DESIGN §1, MATH §6.5): every per-parameter channel
//! Σ_x a_k(x)^p · s_c(x) · base_c[x, j] is a GEMM Uᵀ·(a^p | 1) of the scaled bases U against
//! the layer inputs, with the power fused into the GEMM's operand load and the result added to
//! f32 sums on the device; the Fisher's and the empirical Fisher's variance over inputs come
//! from a per-entry Welford/Chan kernel. The host reads the sums back every
//! [`FLUSH_INPUTS`] inputs (and at the end) and merges them in f64 into the shared
//! [`Accumulator`], so no per-input × per-parameter data ever leaves the device.

use super::context::GpuContext;
use super::kernels::{self, groups_1d, Dispatch, Epilogue, Gemm, Staging};
use super::shaders::Shader;
use crate::engine::accumulate::{Accumulator, LayerBlock};
use crate::engine::channels::NUM_INPUT_SCALARS;
use crate::engine::keys::{channel_groups_of, KeySet};
use crate::family::FamilyKind;
use crate::model::Mlp;
use crate::report::Key;
use crate::{Error, Result};

/// Inputs summed in f32 on the device before the host merges them in f64.
pub const FLUSH_INPUTS: usize = 2048;

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(super) struct AccParams {
    pub(super) bb: u32,
    pub(super) nl: u32,
    pub(super) nch: u32,
    pub(super) n_in: u32,
    pub(super) row: u32,
    pub(super) merged: u32,
    pub(super) _p: [u32; 2],
}

/// The channel keys accumulated on the device for a family out of `channels` (the keys a
/// request needs, [`crate::engine::Needs::channels`]), grouped by power: those whose per-input scalar does not
/// vanish identically for the family (those stay 0).
fn device_channels(kind: FamilyKind, channels: KeySet) -> Vec<(u32, Vec<Key>)> {
    channel_groups_of(channels)
        .into_iter()
        .map(|(power, chans)| {
            let keys = chans
                .iter()
                .filter(|(_, c)| !c.scalar.vanishes(kind))
                .map(|(slot, _)| Key::ALL[*slot])
                .collect();
            (power, keys)
        })
        .collect()
}

/// Number of channel sums the device keeps per parameter for a family and the channel keys a
/// request needs ([`crate::engine::Needs::channels`]; 22 for the categorical family with labels and every
/// key, 10 without bounds).
pub fn accumulated_channels(kind: FamilyKind, channels: KeySet) -> usize {
    device_channels(kind, channels)
        .iter()
        .map(|(_, k)| k.len())
        .sum()
}

/// Channels of one power whose sums share one buffer ([nch · n_out, row], channel-major).
struct Chunk {
    power: u32,
    keys: Vec<Key>,
    /// (base, scalar) per channel, for accumulate.wgsl.
    table: wgpu::Buffer,
    sums: wgpu::Buffer,
}

/// Device state of one layer: channel sums and per-entry Welford statistics
/// ([n_out · row, 4]: Fisher mean, M2, empirical-Fisher mean, M2).
struct LayerSums {
    n_out: usize,
    n_in: usize,
    row: usize,
    chunks: Vec<Chunk>,
    welford: wgpu::Buffer,
}

/// Running sums on the device over the inputs since the last flush.
pub struct DeviceSums {
    layers: Vec<LayerSums>,
    /// Inputs summed since the last flush.
    pub merged: usize,
    staging: Staging,
}

impl DeviceSums {
    /// Sums for the channel keys `channels` of the family (`kind`), for batches of at most
    /// `bb_max` inputs. Channels of a power are split into chunks so
    /// that no buffer exceeds the adapter's binding limit.
    pub fn new(
        ctx: &GpuContext,
        model: &Mlp,
        kind: FamilyKind,
        channels: KeySet,
        bb_max: usize,
    ) -> Result<DeviceSums> {
        let limit = ctx.max_binding_bytes() as usize / 4;
        let groups = device_channels(kind, channels);
        let mut layers = Vec::new();
        for d in model.layers() {
            let (n_out, n_in) = (d.outputs(), d.inputs());
            let row = n_in + usize::from(d.bias.is_some());
            // Channels per chunk: the sums, the scaled bases U and the GEMM's row blocks
            // (≤ 65535 workgroups of 64 rows) must fit.
            let per_chunk = (limit / (n_out * row))
                .min(limit / (bb_max * n_out))
                .min(65_535 * 64 / n_out);
            if per_chunk == 0 {
                return Err(Error::Gpu(format!(
                    "layer '{}' ({n_out}×{n_in}) is too large for the accumulation buffers of \
                     '{}' (binding limit {} bytes); use --engine cpu or a smaller --batch-size",
                    d.key,
                    ctx.info.name,
                    ctx.max_binding_bytes()
                )));
            }
            let mut chunks = Vec::new();
            for (power, keys) in &groups {
                for part in keys.chunks(per_chunk) {
                    let table: Vec<u32> = part
                        .iter()
                        .flat_map(|k| {
                            let c = k.channel().expect("channel keys only");
                            [c.base.index() as u32, c.scalar as u32]
                        })
                        .collect();
                    chunks.push(Chunk {
                        power: *power,
                        keys: part.to_vec(),
                        table: kernels::upload_u32(ctx, "channel table", &table)?,
                        sums: kernels::storage(ctx, "channel sums", part.len() * n_out * row)?,
                    });
                }
            }
            layers.push(LayerSums {
                n_out,
                n_in,
                row,
                chunks,
                welford: kernels::storage(ctx, "welford", 4 * n_out * row)?,
            });
        }
        let sums = DeviceSums {
            layers,
            merged: 0,
            staging: Staging::default(),
        };
        sums.clear(ctx);
        Ok(sums)
    }

    fn clear(&self, ctx: &GpuContext) {
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for l in &self.layers {
            for c in &l.chunks {
                enc.clear_buffer(&c.sums, 0, None);
            }
        }
        ctx.queue.submit([enc.finish()]);
    }

    /// Reads the sums back, merges them into `acc` (in f64) and restarts from zero.
    /// `input_scales`: the per-column factors of the first layer's input on the device
    /// ([`LayerBlock::column_scales`]), or empty.
    pub fn flush(
        &mut self,
        ctx: &GpuContext,
        acc: &mut Accumulator,
        input_scales: &[f64],
    ) -> Result<()> {
        if self.merged == 0 {
            return Ok(());
        }
        let mut regions: Vec<(&wgpu::Buffer, usize)> = Vec::new();
        for l in &self.layers {
            let size = l.n_out * l.row;
            for c in &l.chunks {
                regions.push((&c.sums, c.keys.len() * size));
            }
            regions.push((&l.welford, 4 * size));
        }
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        self.staging.copy(ctx, &mut enc, &regions)?;
        ctx.queue.submit([enc.finish()]);
        let data = self.staging.read(ctx, &regions)?;
        let mut data = data.iter();
        let mut blocks = Vec::new();
        for (index, l) in self.layers.iter().enumerate() {
            let size = l.n_out * l.row;
            let mut channels = Vec::new();
            for c in &l.chunks {
                let sums = data.next().expect("one region per chunk");
                for (i, key) in c.keys.iter().enumerate() {
                    channels.push((*key, &sums[i * size..(i + 1) * size]));
                }
            }
            let welford = data.next().expect("one Welford region per layer");
            check_range(index, &channels, welford)?;
            blocks.push(LayerBlock {
                channels,
                welford,
                column_scales: if index == 0 { input_scales } else { &[] },
            });
        }
        acc.merge_block(self.merged, &blocks)?;
        self.merged = 0;
        self.clear(ctx);
        Ok(())
    }
}

/// Refuses device sums that left f32's range: an infinity or NaN (overflow) would be a
/// silently wrong result, and so would subnormal sums (underflow, with lost precision) when a
/// whole channel lies near f32's smallest normal numbers. A subnormal entry in a channel whose
/// largest magnitude is at least [`SUBNORMAL_HEADROOM`] times the smallest normal number is
/// kept: its absolute error (< 2⁻¹⁴⁹) is below f32's resolution of that largest entry, as for
/// any small entry of the channel (signed channels such as the standard errors' sums also
/// cancel to near zero).
fn check_range(layer: usize, channels: &[(Key, &[f32])], welford: &[f32]) -> Result<()> {
    let bad_in = |sums: &[f32]| -> Option<f32> {
        if let Some(v) = sums.iter().find(|v| !v.is_finite()) {
            return Some(*v);
        }
        let max = sums.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max >= f32::MIN_POSITIVE * SUBNORMAL_HEADROOM {
            return None;
        }
        sums.iter().find(|v| v.is_subnormal()).copied()
    };
    let found = channels
        .iter()
        .find_map(|(key, sums)| bad_in(sums).map(|v| (key.name(), v)))
        .or_else(|| bad_in(welford).map(|v| ("fisher", v)));
    match found {
        None => Ok(()),
        Some((key, v)) => Err(Error::GpuRange(format!(
            "the sums of '{key}' in layer {layer} left f32's range on the device ({v:e}); the \
             model's activations or weights are too large or too small for the f32 GPU \
             engine: use --engine cpu (f64)"
        ))),
    }
}

/// How far above f32's smallest normal number a channel's largest magnitude must lie for its
/// subnormal entries to be negligible (2²⁴: f32's resolution).
const SUBNORMAL_HEADROOM: f32 = 16_777_216.0;

/// The accumulation dispatches for batches of `bb` inputs.
pub struct AccumPlan {
    pub bb: usize,
    scalars: wgpu::Buffer,
    dispatches: Vec<Dispatch>,
    /// Welford dispatches, whose uniform carries the inputs merged so far.
    welford: Vec<(usize, AccParams)>,
    /// The channel table bound by the Welford dispatches (which do not read it) when a
    /// layer has no channel chunk: a selection of Welford keys only (`--keys var_x`).
    _empty_table: wgpu::Buffer,
}

impl AccumPlan {
    /// `bases[l]` ([bb, NB, n_l]) and `inputs[l]` (the layer inputs a_{l−1}, [bb, n_{l−1}])
    /// are the analysis plan's buffers for the same batch size.
    pub fn new(
        ctx: &GpuContext,
        sums: &DeviceSums,
        bases: &[wgpu::Buffer],
        inputs: &[&wgpu::Buffer],
        bb: usize,
    ) -> Result<AccumPlan> {
        let u = |v: usize| v as u32;
        let scalars = kernels::storage(ctx, "input scalars", bb * NUM_INPUT_SCALARS)?;
        let widest = sums
            .layers
            .iter()
            .flat_map(|l| l.chunks.iter().map(move |c| c.keys.len() * l.n_out))
            .max()
            .unwrap_or(1);
        let scaled = kernels::storage(ctx, "scaled bases", bb * widest)?;
        let empty_table = kernels::upload_u32(ctx, "empty channel table", &[0, 0])?;
        let mut dispatches = Vec::new();
        let mut welford = Vec::new();
        for ((l, b), a) in sums.layers.iter().zip(bases).zip(inputs) {
            let params = AccParams {
                bb: u(bb),
                nl: u(l.n_out),
                n_in: u(l.n_in),
                row: u(l.row),
                ..Default::default()
            };
            for c in &l.chunks {
                let nch = c.keys.len();
                let p = AccParams {
                    nch: u(nch),
                    ..params
                };
                dispatches.push(kernels::dispatch(
                    ctx,
                    Shader::Accumulate,
                    "scale_main",
                    &[],
                    &p,
                    &[b, &scalars, a, &c.table, &scaled],
                    groups_1d((bb * nch * l.n_out) as u64)?,
                )?);
                // sums[c·n_out + j, k] += Σ_x U[x, c·n_out + j] · a[x, k]^p (a = 1 past n_in).
                let mut gemm = Gemm::new(u(nch * l.n_out), u(l.row), u(bb), true, false);
                gemm.params.ldb = u(l.n_in);
                gemm.params.b_cols = u(l.n_in);
                gemm.pow_b = c.power;
                gemm.epilogue = Epilogue::Accumulate;
                dispatches.push(gemm.dispatch(ctx, &scaled, a, &c.sums, &c.table)?);
            }
            welford.push((dispatches.len(), params));
            dispatches.push(kernels::dispatch(
                ctx,
                Shader::Accumulate,
                "welford_main",
                &[],
                &params,
                &[
                    b,
                    &scalars,
                    a,
                    l.chunks.first().map_or(&empty_table, |c| &c.table),
                    &l.welford,
                ],
                groups_1d((l.n_out * l.row) as u64)?,
            )?);
        }
        Ok(AccumPlan {
            bb,
            scalars,
            dispatches,
            welford,
            _empty_table: empty_table,
        })
    }

    /// Uploads the batch's per-input scalars ([bb, NS]) and the running count, and returns
    /// the dispatches to record (after the analysis pass of the same batch).
    pub fn prepare(&self, ctx: &GpuContext, sums: &mut DeviceSums, scalars: &[f32]) -> &[Dispatch] {
        ctx.queue
            .write_buffer(&self.scalars, 0, bytemuck::cast_slice(scalars));
        for (i, p) in &self.welford {
            let p = AccParams {
                merged: sums.merged as u32,
                ..*p
            };
            ctx.queue
                .write_buffer(self.dispatches[*i].uniform(), 0, bytemuck::bytes_of(&p));
        }
        sums.merged += self.bb;
        &self.dispatches
    }
}

#[cfg(test)]
mod range_tests {
    use super::*;

    /// Subnormal entries beside normal ones pass; a channel that lies wholly near the
    /// underflow threshold, or holds a non-finite sum, is refused.
    #[test]
    fn subnormal_entries_are_refused_only_in_a_channel_near_underflow() {
        let tiny = f32::MIN_POSITIVE / 8.0;
        assert!(tiny.is_subnormal());
        let ok = [1e-3f32, tiny, -tiny, 0.0];
        assert!(check_range(0, &[(Key::McVar1Se, &ok)], &[]).is_ok());
        let low = [1e-35f32, tiny];
        let e = check_range(0, &[(Key::McVar1Se, &low)], &[]).unwrap_err();
        assert!(matches!(e, Error::GpuRange(_)), "{e}");
        let inf = [1.0f32, f32::INFINITY];
        assert!(check_range(1, &[(Key::Fisher, &inf)], &[]).is_err());
        assert!(check_range(1, &[], &[1.0, f32::NAN]).is_err());
        assert!(check_range(1, &[], &[tiny, 0.0]).is_err());
    }
}
