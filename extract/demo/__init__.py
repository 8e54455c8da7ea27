"""The bundled demo dataset: a small synthetic MIMIC-CXR-JPG tree (images, reports, tables) to run the pipeline on.

Images are radiograph-like drawings whose findings (cardiomegaly, effusion, pneumothorax, edema,
airspace opacity, atelectasis, support devices) are visible and stated in MIMIC-style reports; the
CheXpert table agrees with the reports. Realistic faults are planted on purpose.
"""
from adaptor_vlp.extract.demo.cohort import MIN_SUBJECTS, Fault, PlantedFault
from adaptor_vlp.extract.demo.tree import DemoSummary, write_demo_dataset

__all__ = ["MIN_SUBJECTS", "DemoSummary", "Fault", "PlantedFault", "write_demo_dataset"]
