"""Render stage: crystal structures -> space-filling images (VTK offscreen) -> object store, via Ray Data."""

from crystalvision.render.palette import COLOUR_SOURCE, element_colour
from crystalvision.render.radii import RADIUS_SOURCES, element_radius
from crystalvision.render.rotations import structure_quaternions, view_quaternion, view_rotation
from crystalvision.render.scene import Renderer, encode_png, prepare_scene

__all__ = [
    "COLOUR_SOURCE",
    "RADIUS_SOURCES",
    "Renderer",
    "element_colour",
    "element_radius",
    "encode_png",
    "prepare_scene",
    "structure_quaternions",
    "view_quaternion",
    "view_rotation",
]
