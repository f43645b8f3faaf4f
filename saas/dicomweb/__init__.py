"""DICOMweb at /dicomweb/<slug>/: the tenant-checked, audited proxy in front of each tenant's Orthanc."""
