"""Downstream dataset readers: CheXpert, RSNA Pneumonia, COVIDx and SIIM-ACR Pneumothorax in their public layouts.

Each reader turns a dataset tree into a `Manifest` the extract stage embeds like MIMIC-CXR's: one
row per image with stable ids, a split (patient-wise where the data allows, fixed seed), the
dataset's labels and, for segmentation datasets, a mask target. Downstream datasets have no
reports, so every row's report is marked unusable and text extraction masks it.
"""
from adaptor_vlp.extract.downstream.chexpert import BlankPolicy, UncertainPolicy, read_chexpert
from adaptor_vlp.extract.downstream.covidx import read_covidx
from adaptor_vlp.extract.downstream.rsna import read_rsna
from adaptor_vlp.extract.downstream.siim import read_siim
from adaptor_vlp.extract.downstream.tables import DownstreamLayoutError

__all__ = [
    "BlankPolicy",
    "DownstreamLayoutError",
    "UncertainPolicy",
    "read_chexpert",
    "read_covidx",
    "read_rsna",
    "read_siim",
]
