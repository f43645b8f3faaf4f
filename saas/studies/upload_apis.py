"""REST API of browser uploads: create a batch, declare files, send resumable chunks, finish, poll for the summary."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.permissions import BasePermission
from rest_framework.response import Response

from saas.studies.enums import UploadStatus
from saas.studies.models import UploadBatch, UploadFile
from saas.studies.uploads import (
    MAX_CHUNK_BYTES,
    UploadChunkIncomplete,
    UploadClosed,
    UploadOffsetMismatch,
    UploadRefused,
    upload_batch_create,
    upload_batch_finish,
    upload_batches_of,
    upload_chunk_append,
    upload_file_create,
    upload_files_of,
    upload_tenant,
)
from tenants.viewsets import TenantScopedViewSet

CHUNK_MEDIA_TYPE = "application/offset+octet-stream"


class MayUpload(BasePermission):
    """Clinic administrators and staff of the active clinic, or a token with `studies:write`."""

    def has_permission(self, request, view) -> bool:
        # Raises the precise 401/403/404 itself, so the client learns why.
        upload_tenant(request._request.actor)
        return True


class ChunkParser(BaseParser):
    """Leaves the chunk unread so the view streams it to disk (declared for content negotiation and the schema)."""

    media_type = CHUNK_MEDIA_TYPE

    def parse(self, stream, media_type=None, parser_context=None):  # pragma: no cover - never used
        return {}


class LengthRequired(APIException):
    status_code = 411
    default_detail = "Send each chunk with a Content-Length header."


class ChunkTooLarge(APIException):
    status_code = 413
    default_detail = f"A chunk may hold at most {MAX_CHUNK_BYTES // (1024 * 1024)} MiB."


class UnsupportedChunkType(APIException):
    status_code = 415
    default_detail = f"Send chunks as {CHUNK_MEDIA_TYPE}."


class BatchCreatedSerializer(serializers.Serializer):
    id = serializers.UUIDField()


class FileDeclareSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The file's path relative to the dropped folder, or its name.")
    size = serializers.IntegerField(help_text="The file's size in bytes.")


class UploadFileSerializer(serializers.ModelSerializer):
    class Meta:
        model = UploadFile
        fields = ["id", "name", "size", "received", "status"]
        read_only_fields = fields


class FileRefusedSerializer(serializers.Serializer):
    file = serializers.CharField()
    reason = serializers.CharField()


class StudySummarySerializer(serializers.Serializer):
    study_instance_uid = serializers.CharField()
    patient_name = serializers.CharField()
    patient_id = serializers.CharField()
    study_date = serializers.CharField()
    study_description = serializers.CharField()
    instances_accepted = serializers.IntegerField()


class UploadSummarySerializer(serializers.Serializer):
    studies = StudySummarySerializer(many=True)
    refused = FileRefusedSerializer(many=True)
    skipped = FileRefusedSerializer(many=True)
    failed = FileRefusedSerializer(many=True)


class UploadBatchStateSerializer(serializers.ModelSerializer):
    status_url = serializers.SerializerMethodField(help_text="Poll this until `status` is `processed`.")
    summary = serializers.SerializerMethodField()

    class Meta:
        model = UploadBatch
        fields = ["id", "status", "status_url", "files_total", "files_done", "entries_done", "summary"]
        read_only_fields = fields
        extra_kwargs = {
            "files_total": {"help_text": "Files being validated and stored (set when the batch is finished)."},
            "files_done": {"help_text": "Files processed so far."},
            "entries_done": {"help_text": "Entries checked so far in the file being processed (a .zip holds many)."},
        }

    def get_status_url(self, batch: UploadBatch) -> str:
        return reverse("upload-batch", kwargs={"batch_id": batch.pk})

    @extend_schema_field(UploadSummarySerializer(allow_null=True))
    def get_summary(self, batch: UploadBatch) -> dict | None:
        # Only a processed batch has one; an empty dict would read as "nothing stored".
        return batch.summary if batch.status == UploadStatus.PROCESSED else None


def _refused(error: UploadRefused, *, code: int = status.HTTP_400_BAD_REQUEST) -> Response:
    return Response({"file": error.file, "reason": error.reason}, status=code)


def _closed() -> Response:
    return Response({"detail": "This upload is already finished; start a new one."}, status=status.HTTP_409_CONFLICT)


class UploadBatchViewSet(TenantScopedViewSet):
    """One drop of files, folders or .zip archives."""

    model = UploadBatch
    permission_classes = [MayUpload]
    parser_classes = [JSONParser]
    lookup_url_kwarg = "batch_id"

    def filter_rows(self, rows):
        return rows & upload_batches_of(actor=self.request.actor)

    @extend_schema(request=None, responses={201: BatchCreatedSerializer}, summary="Start an upload batch")
    def create(self, request):
        batch = upload_batch_create(actor=request.actor)
        return Response({"id": str(batch.pk)}, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=FileDeclareSerializer,
        responses={201: UploadFileSerializer, 400: FileRefusedSerializer, 409: OpenApiResponse(description="finished")},
        summary="Declare a file of the batch before sending its chunks",
    )
    @action(detail=True, methods=["post"], url_path="files")
    def add_file(self, request, batch_id=None):
        name, size = request.data.get("name"), request.data.get("size")
        if not isinstance(name, str):
            return _refused(UploadRefused("", "the file name is missing"))
        # bool is an int in Python; `true` is no size.
        if not isinstance(size, int) or isinstance(size, bool):
            return _refused(UploadRefused(name[:200], "the file size (in bytes) is missing"))
        try:
            upload_file = upload_file_create(actor=request.actor, batch=self.get_object(), name=name, size=size)
        except UploadRefused as error:
            return _refused(error)
        except UploadClosed:
            return _closed()
        return Response({"id": str(upload_file.pk), "received": upload_file.received}, status=status.HTTP_201_CREATED)

    @extend_schema(responses={200: UploadBatchStateSerializer}, summary="The batch's state: progress, then its summary")
    def retrieve(self, request, batch_id=None):
        return Response(UploadBatchStateSerializer(self.get_object()).data)

    @extend_schema(
        request=None,
        responses={
            202: OpenApiResponse(
                UploadBatchStateSerializer, description="Queued (or still processing): poll status_url"
            ),
            200: OpenApiResponse(UploadBatchStateSerializer, description="Already processed: the summary per study"),
        },
        summary="Close the batch and have every received file validated and stored (idempotent)",
    )
    @action(detail=True, methods=["post"], url_path="finish")
    def finish(self, request, batch_id=None):
        # A worker does the work: a 1 GB archive takes longer than any proxy waits for an answer.
        batch = upload_batch_finish(actor=request.actor, batch=self.get_object())
        state = UploadBatchStateSerializer(batch).data
        if batch.status == UploadStatus.PROCESSED:
            return Response(state)
        return Response(state, status=status.HTTP_202_ACCEPTED, headers={"Location": state["status_url"]})


class UploadFileViewSet(TenantScopedViewSet):
    """One file of a batch: its state (to resume after a reconnect) and its chunks."""

    model = UploadFile
    permission_classes = [MayUpload]
    parser_classes = [ChunkParser]
    serializer_class = UploadFileSerializer
    lookup_url_kwarg = "file_id"

    def filter_rows(self, rows):
        return rows & upload_files_of(actor=self.request.actor, batch_id=self.kwargs["batch_id"])

    @extend_schema(responses={200: UploadFileSerializer}, summary="How much of the file the server holds")
    def retrieve(self, request, batch_id=None, file_id=None):
        return Response(UploadFileSerializer(self.get_object()).data)

    @extend_schema(
        request={CHUNK_MEDIA_TYPE: bytes},
        parameters=[OpenApiParameter("Upload-Offset", int, OpenApiParameter.HEADER, required=True)],
        responses={
            200: UploadFileSerializer,
            400: FileRefusedSerializer,
            409: OpenApiResponse(description='{"received": n}: resume from byte n'),
        },
        summary="Append a chunk (up to 16 MiB) at Upload-Offset, which must equal `received`",
    )
    def update(self, request, batch_id=None, file_id=None):
        media_type = request.content_type.split(";")[0].strip().lower()
        if media_type != CHUNK_MEDIA_TYPE:
            raise UnsupportedChunkType()
        offset = request.headers.get("Upload-Offset", "")
        # ASCII digits, no more than a byte count of the largest file can need ("²" is a digit to isdigit).
        if not (offset.isascii() and offset.isdigit() and len(offset) <= 15):
            raise ParseError("Send the chunk's position as an Upload-Offset header (a byte count).")
        length = request.META.get("CONTENT_LENGTH", "")
        if not (length.isascii() and length.isdigit() and len(length) <= 15):
            raise LengthRequired()
        if int(length) > MAX_CHUNK_BYTES:
            raise ChunkTooLarge()
        upload_file = self.get_object()
        try:
            upload_file = upload_chunk_append(
                actor=request.actor,
                upload_file=upload_file,
                offset=int(offset),
                length=int(length),
                # Django's request is a file-like view of the body, bounded by Content-Length: streamed, never
                # loaded whole.
                body=request._request,
            )
        except UploadOffsetMismatch as error:
            return Response(
                {"received": error.received, "detail": f"The upload continues at byte {error.received}."},
                status=status.HTTP_409_CONFLICT,
                headers={"Upload-Offset": str(error.received)},
            )
        except UploadRefused as error:
            return _refused(error)
        except UploadClosed:
            return _closed()
        except UploadChunkIncomplete:
            return Response(
                {
                    "file": upload_file.name,
                    "reason": "the chunk ended before its declared length; send it again",
                    "received": upload_file.received,
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(UploadFileSerializer(upload_file).data, headers={"Upload-Offset": str(upload_file.received)})
