"""Every dataset reader, beside `registry`, the one table of which layout name is read by which reader.

Each reader turns a dataset tree in its public layout into a `Manifest` the extract stage embeds:
one row per image with stable ids, a split (the official one, else patient-wise with a fixed
seed), the dataset's labels and, for segmentation datasets, a mask target. MIMIC-CXR
(`mimic_cxr`, with `report_sections` picking the text of its reports) is the pre-training set;
CheXpert, RSNA Pneumonia, COVIDx and SIIM-ACR Pneumothorax are downstream sets, which have no
reports, so every row's report is marked unusable and text extraction masks it. `csv_tables` reads
every reader's tables the same however they were saved; `downstream_tables`, `rows`, `splits` and
`dicom_header` are the downstream readers' shared helpers.
"""
from adaptor_vlp.extract.datasets.chexpert import BlankPolicy, ChexpertUncertainPolicy, read_chexpert
from adaptor_vlp.extract.datasets.covidx import read_covidx
from adaptor_vlp.extract.datasets.downstream_tables import DownstreamLayoutError
from adaptor_vlp.extract.datasets.rsna import read_rsna
from adaptor_vlp.extract.datasets.siim import read_siim

__all__ = [
    "BlankPolicy",
    "ChexpertUncertainPolicy",
    "DownstreamLayoutError",
    "read_chexpert",
    "read_covidx",
    "read_rsna",
    "read_siim",
]
