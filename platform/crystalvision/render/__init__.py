"""Render stage: crystal structures -> space-filling images (VTK offscreen) -> object store, via Ray Data."""

from crystalvision.core import door

__all__, __getattr__, __dir__ = door(
    __name__,
    {
        "figures": "radii_comparison_apart",
        "job": "RenderResult render_config_hash render_dataset",
        "palette": "COLOUR_SOURCE element_colour",
        "radii": "RADIUS_SOURCES element_radius",
        "rotations": "structure_quaternions view_quaternion view_rotation",
        "scene": "Renderer prepare_scene",
    },
)
