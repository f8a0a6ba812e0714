//! The one door to the program's maps. A map is named by its descriptor in
//! `balancer_common::maps` (name, kind, key and value), never by a string:
//! [`super::Dataplane::map`] and [`super::Dataplane::map_mut`] open the
//! loaded program's maps, [`PinnedMaps::open`] those a daemon pinned (for the
//! HA thread, `balancer flows`, the benchmarks). Either way the handle type
//! must be a view of the descriptor ([`ViewOf`]), so opening a map as
//! something it is not, or with other key or value types, does not compile.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::{
    Pod,
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, RingBuf, xdp::DevMapHash,
    },
};
use balancer_common::maps::{MapDef, kind};

/// An aya handle that views maps of descriptor `M`.
pub trait ViewOf<M: MapDef> {}

impl<T, M: MapDef<Kind = kind::Array>> ViewOf<M> for Array<T, M::Value> where M::Value: Pod {}
impl<T, M: MapDef<Kind = kind::PerCpuArray>> ViewOf<M> for PerCpuArray<T, M::Value> where
    M::Value: Pod
{
}
impl<T, M: MapDef<Kind = kind::Hash>> ViewOf<M> for HashMap<T, M::Key, M::Value>
where
    M::Key: Pod,
    M::Value: Pod,
{
}
impl<T, M: MapDef<Kind = kind::LpmTrie>> ViewOf<M> for LpmTrie<T, M::Key, M::Value>
where
    M::Key: Pod,
    M::Value: Pod,
{
}
impl<T, M: MapDef<Kind = kind::RingBuf>> ViewOf<M> for RingBuf<T> {}
impl<T, M: MapDef<Kind = kind::DevMapHash>> ViewOf<M> for DevMapHash<T> {}

/// A view of `M` on `map` (a map of the loaded object, or a pinned one).
pub(super) fn view<M: MapDef, S, V>(map: S) -> Result<V>
where
    V: ViewOf<M> + TryFrom<S, Error = MapError>,
{
    V::try_from(map).with_context(|| format!("map {}", M::NAME))
}

/// The maps a daemon pinned under `[control].pin_dir`, for the readers that do
/// not load the program.
#[derive(Debug, Clone)]
pub struct PinnedMaps {
    dir: PathBuf,
}

impl PinnedMaps {
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            dir: pin_dir.to_path_buf(),
        }
    }

    /// The pinned map of `M`, as an owned handle.
    pub fn open<M: MapDef, V>(&self) -> Result<V>
    where
        V: ViewOf<M> + TryFrom<Map, Error = MapError>,
    {
        let path = super::pin::map_path(&self.dir, M::NAME);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        let map = Map::from_map_data(data)
            .with_context(|| format!("the pinned map {}", path.display()))?;
        view::<M, _, _>(map)
    }
}
