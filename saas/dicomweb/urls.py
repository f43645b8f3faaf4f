"""DICOMweb routes under /dicomweb/<slug>/ (the /studies and /studies/{study} routes sit in saas.config.urls)."""

from django.urls import path

from saas.dicomweb import converters, views

converters.register()

_STUDY = "studies/<uid:study_instance_uid>"
_SERIES = f"{_STUDY}/series/<uid:series_instance_uid>"
_INSTANCE = f"{_SERIES}/instances/<uid:sop_instance_uid>"
_FRAMES = f"{_INSTANCE}/frames/<str:frames>"

urlpatterns = [
    path("series", views.qido_all_series, name="dicomweb-series"),
    path("instances", views.qido_all_instances, name="dicomweb-instances"),
    path(f"{_STUDY}/metadata", views.study_metadata, name="dicomweb-study-metadata"),
    path(f"{_STUDY}/rendered", views.study_rendered, name="dicomweb-study-rendered"),
    path(f"{_STUDY}/thumbnail", views.study_thumbnail, name="dicomweb-study-thumbnail"),
    path(f"{_STUDY}/series", views.qido_study_series, name="dicomweb-study-series"),
    path(f"{_STUDY}/instances", views.qido_study_instances, name="dicomweb-study-instances"),
    path(_SERIES, views.series_retrieve, name="dicomweb-series-retrieve"),
    path(f"{_SERIES}/metadata", views.series_metadata, name="dicomweb-series-metadata"),
    path(f"{_SERIES}/rendered", views.series_rendered, name="dicomweb-series-rendered"),
    path(f"{_SERIES}/thumbnail", views.series_thumbnail, name="dicomweb-series-thumbnail"),
    path(f"{_SERIES}/instances", views.qido_series_instances, name="dicomweb-series-instances"),
    path(_INSTANCE, views.instance_retrieve, name="dicomweb-instance-retrieve"),
    path(f"{_INSTANCE}/metadata", views.instance_metadata, name="dicomweb-instance-metadata"),
    path(f"{_INSTANCE}/rendered", views.instance_rendered, name="dicomweb-instance-rendered"),
    path(f"{_INSTANCE}/thumbnail", views.instance_thumbnail, name="dicomweb-instance-thumbnail"),
    path(f"{_INSTANCE}/bulk/<path:tag_path>", views.instance_bulkdata, name="dicomweb-instance-bulkdata"),
    path(_FRAMES, views.instance_frames, name="dicomweb-frames"),
    path(f"{_FRAMES}/rendered", views.frames_rendered, name="dicomweb-frames-rendered"),
    path(f"{_FRAMES}/thumbnail", views.frames_thumbnail, name="dicomweb-frames-thumbnail"),
]
