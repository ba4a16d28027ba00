"""One lighting model for mesh and impostor spheres, as GLSL replacements of VTK's fragment shader.

VTK's own lighting code is general (any light, view vector from the fragment position, ``pow`` for the specular
term) and costs a third of a frame on software OpenGL (llvmpipe). The scene here always has one directional
light fixed in the camera frame, so its direction is a compile-time constant, the orthographic view vector is
(0, 0, 1), and the specular exponent 32 is five multiplications. Impostor spheres under an orthographic camera
also get a direct normal and depth (the disc offset gives the normal, the depth is linear in z) instead of VTK's
general ray-sphere intersection. Together these double the impostor frame rate at the same look (the mean
absolute pixel difference to VTK's shading is about 0.2 of 255 at 224 px).

Both sphere methods share :func:`light_glsl`, so they look the same; only the rasterisation differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

LIGHT_DIRECTION = (-1.0, 1.0, 1.5)  # towards the light, camera frame: upper left, in front
SPECULAR_EXPONENT = 32  # x**32 by five squarings


def light_glsl(normal: str, orthographic: bool) -> str:
    """Phong shading with one directional light; writes ``fragOutput0`` from VTK's colour variables."""
    lx, ly, lz = np.asarray(LIGHT_DIRECTION) / np.linalg.norm(LIGHT_DIRECTION)
    view = "vec3(0.0, 0.0, 1.0)" if orthographic else "normalize(-vertexVC.xyz)"
    return f"""
  vec3 cvL = vec3({lx:.8f}, {ly:.8f}, {lz:.8f});
  float cvDf = max(0.0, dot({normal}, cvL));
  float cvRv = sign(cvDf) * max(0.0, dot(reflect(-cvL, {normal}), {view}));
  float cvS = cvRv * cvRv; cvS *= cvS; cvS *= cvS; cvS *= cvS; cvS *= cvS;
  fragOutput0 = vec4(ambientColor + cvDf * diffuseColor + cvS * specularColor, 1.0);
"""


# Orthographic impostor: the fragment's offset from the sphere centre in the view plane gives the normal.
IMPOSTOR_NORMAL_ORTHO = """
  vec2 cvOff = (vertexVCGSOutput.xy - centerVCGSOutput.xy) / radiusVCGSOutput;
  float cvD2 = dot(cvOff, cvOff);
  if (cvD2 > 1.0) { discard; }
  vec3 normalVCGSOutput = vec3(cvOff, sqrt(1.0 - cvD2));
  vertexVC = vec4(centerVCGSOutput + radiusVCGSOutput * normalVCGSOutput, 1.0);
"""
IMPOSTOR_DEPTH_ORTHO = """
  gl_FragDepth = (VCDCMatrix[2][2] * vertexVC.z + VCDCMatrix[3][2] + 1.0) * 0.5;
"""


def apply_shading(actor: Any, method: str, orthographic: bool) -> None:
    """Install the shared lighting (and, for orthographic impostors, the direct normal/depth) on ``actor``."""
    prop = actor.GetShaderProperty()
    normal = "normalVCGSOutput" if method == "impostor" else "normalVCVSOutput"
    prop.AddFragmentShaderReplacement("//VTK::Light::Impl", True, light_glsl(normal, orthographic), False)
    if method == "impostor" and orthographic:
        prop.AddFragmentShaderReplacement("//VTK::Normal::Impl", True, IMPOSTOR_NORMAL_ORTHO, False)
        prop.AddFragmentShaderReplacement("//VTK::Depth::Impl", True, IMPOSTOR_DEPTH_ORTHO, False)
