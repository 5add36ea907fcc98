//! The wgpu context: instance, adapter, device and queue, the adapter's limits, and compute
//! pipelines compiled once and cached by (shader, entry point, override constants).

use super::shaders::{Binding, GemmTile, Shader};
use crate::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

/// Which adapter a [`GpuContext`] opens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The best adapter: a discrete GPU first, then an integrated one, software rasterisers
    /// such as Mesa's lavapipe last.
    #[default]
    Best,
    /// The best adapter whose name contains this text (case-insensitive), e.g. "H200".
    Named(String),
}

/// Options of a [`GpuContext`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// The adapter to open.
    pub adapter: AdapterChoice,
    /// Use the GEMM's 8×8 register blocking (128×128 tiles) where the adapter's workgroup
    /// memory allows it, instead of the portable 4×4 (64×64 tiles).
    pub wide_gemm: bool,
}

/// A compiled shader module with its group-0 layout and pipeline layout.
type Compiled = (
    wgpu::ShaderModule,
    Arc<wgpu::BindGroupLayout>,
    wgpu::PipelineLayout,
);

type PipelineKey = (Shader, &'static str, Vec<(&'static str, u64)>);

/// One GPU device with its queue, pipeline cache and the analysis cache. Create it once with
/// [`GpuContext::new`] and pass it to analyses ([`crate::AnalysisOptions::gpu`]) and
/// training ([`crate::train::TrainConfig::gpu`]); [`GpuContext::shared`] is the default one
/// that `EngineKind::Auto`/`Gpu` open when none is given.
pub struct GpuContext {
    /// The logical device.
    pub(crate) device: wgpu::Device,
    /// Its command queue.
    pub(crate) queue: wgpu::Queue,
    /// The adapter's name, backend and device type.
    pub(crate) info: wgpu::AdapterInfo,
    /// The limits the device was created with.
    pub(crate) limits: wgpu::Limits,
    /// The GEMM blocking asked for ([`GpuOptions::wide_gemm`]).
    wide_gemm: bool,
    /// The most recent analysis shape's device state, kept for the next analysis of that
    /// shape; taken out while in use, so concurrent analyses never share buffers.
    pub(super) prepared: Mutex<Option<super::analysis::Prepared>>,
    /// Analyses that reused `prepared` (diagnostics and tests).
    pub(super) reused: AtomicUsize,
    modules: Mutex<HashMap<Shader, Compiled>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
    /// The first uncaptured device error (validation, out of memory, device lost).
    error: Arc<Mutex<Option<String>>>,
}

fn gpu_err(msg: impl Into<String>) -> Error {
    Error::Gpu(msg.into())
}

/// Ranks adapters: discrete GPU first, software rasterisers (lavapipe) last.
fn rank(info: &wgpu::AdapterInfo) -> u8 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuContext({})", self.describe())
    }
}

/// The default context of [`GpuContext::shared`]; only a success is kept.
static DEFAULT: Mutex<Option<Arc<GpuContext>>> = Mutex::new(None);

impl GpuContext {
    /// Opens the chosen adapter with the portable GEMM blocking.
    pub fn new(adapter: AdapterChoice) -> Result<GpuContext> {
        GpuContext::with_options(&GpuOptions {
            adapter,
            ..Default::default()
        })
    }

    /// Opens an adapter with the given options.
    pub fn with_options(options: &GpuOptions) -> Result<GpuContext> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let wanted = match &options.adapter {
            AdapterChoice::Best => None,
            AdapterChoice::Named(name) => Some(name.to_lowercase()),
        };
        if let Some(w) = &wanted {
            adapters.retain(|a| a.get_info().name.to_lowercase().contains(w.as_str()));
        }
        adapters.sort_by_key(|a| rank(&a.get_info()));
        let adapter = adapters.into_iter().next().ok_or_else(|| {
            gpu_err(match &wanted {
                Some(w) => format!(
                    "no GPU adapter's name contains '{w}'; pick another name or the best adapter"
                ),
                None => "no GPU adapter found (install a Vulkan, Metal or DX12 driver; on Linux \
                         without a GPU, Mesa's lavapipe: apt-get install mesa-vulkan-drivers)"
                    .to_string(),
            })
        })?;
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("diagfim"),
            required_limits: limits.clone(),
            required_features: adapter.features() & wgpu::Features::TIMESTAMP_QUERY,
            ..Default::default()
        }))
        .map_err(|e| gpu_err(format!("cannot open '{}': {e}", info.name)))?;
        let error = Arc::new(Mutex::new(None::<String>));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            wide_gemm: options.wide_gemm,
            prepared: Mutex::new(None),
            reused: AtomicUsize::new(0),
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            error,
        })
    }

    /// The default context (the best adapter, default options), opened on first use and
    /// shared by the analyses and training runs that are given no context. An error is not
    /// kept: the next call tries again (a driver installed meanwhile is found).
    pub fn shared() -> Result<Arc<GpuContext>> {
        let mut slot = DEFAULT
            .lock()
            .map_err(|_| Error::Internal("the default GPU context's lock is poisoned".into()))?;
        if let Some(ctx) = slot.as_ref() {
            return Ok(ctx.clone());
        }
        let ctx = Arc::new(GpuContext::new(AdapterChoice::Best)?);
        *slot = Some(ctx.clone());
        Ok(ctx)
    }

    /// The context an analysis or training run uses: the one given, else [`Self::shared`].
    pub(crate) fn given_or_shared(given: Option<&Arc<GpuContext>>) -> Result<Arc<GpuContext>> {
        match given {
            Some(ctx) => Ok(ctx.clone()),
            None => GpuContext::shared(),
        }
    }

    /// The adapter's name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// How many analyses so far reused the previous analysis's device state.
    pub fn cache_reuses(&self) -> usize {
        self.reused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Frees the device memory kept for the most recent analysis shape (it is otherwise kept
    /// until an analysis of another shape replaces it, or the context is dropped).
    pub fn release_cache(&self) {
        if let Ok(mut slot) = self.prepared.lock() {
            *slot = None;
        }
    }

    /// "name (backend, device type)".
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Whether pass timestamps are available (optional feature TIMESTAMP_QUERY).
    pub fn has_timestamps(&self) -> bool {
        self.device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// Whether the adapter is a software rasteriser such as lavapipe.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The GEMM register blocking: 8×8 if [`GpuOptions::wide_gemm`] asked for it and the
    /// adapter has the workgroup memory, else the portable 4×4.
    pub(crate) fn gemm_tile(&self) -> GemmTile {
        if self.wide_gemm
            && GemmTile::R8.workgroup_bytes() <= self.limits.max_compute_workgroup_storage_size
        {
            GemmTile::R8
        } else {
            GemmTile::R4
        }
    }

    /// Largest storage binding, bounded by the largest buffer.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// A cached compute pipeline with the given override constants.
    pub(crate) fn pipeline(
        &self,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<wgpu::ComputePipeline>> {
        let key: PipelineKey = (
            shader,
            entry,
            constants.iter().map(|(k, v)| (*k, v.to_bits())).collect(),
        );
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| gpu_err("pipeline cache poisoned"))?;
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| gpu_err("module cache poisoned"))?;
        let (module, _, layout) = modules
            .entry(shader)
            .or_insert_with(|| self.compile(shader));
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(layout),
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            });
        self.check()?;
        let pipeline = Arc::new(pipeline);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn compile(
        &self,
        shader: Shader,
    ) -> (
        wgpu::ShaderModule,
        Arc<wgpu::BindGroupLayout>,
        wgpu::PipelineLayout,
    ) {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name()),
                source: wgpu::ShaderSource::Wgsl(shader.source().into()),
            });
        let entries: Vec<wgpu::BindGroupLayoutEntry> = shader
            .bindings()
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let bgl = Arc::new(self.device.create_bind_group_layout(
            &wgpu::BindGroupLayoutDescriptor {
                label: Some(shader.name()),
                entries: &entries,
            },
        ));
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(shader.name()),
                bind_group_layouts: &[Some(&bgl)],
                immediate_size: 0,
            });
        (module, bgl, layout)
    }

    /// The bind group layout of a shader's group 0.
    pub(crate) fn bind_group_layout(&self, shader: Shader) -> Result<Arc<wgpu::BindGroupLayout>> {
        let mut modules = self
            .modules
            .lock()
            .map_err(|_| gpu_err("module cache poisoned"))?;
        Ok(modules
            .entry(shader)
            .or_insert_with(|| self.compile(shader))
            .1
            .clone())
    }

    /// Returns the first device error seen so far, if any.
    pub fn check(&self) -> Result<()> {
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(msg) => Err(gpu_err(format!(
                "device error on '{}': {msg}",
                self.info.name
            ))),
            None => Ok(()),
        }
    }
}
