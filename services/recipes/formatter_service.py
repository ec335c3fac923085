"""FormatterService over gRPC: protos in, domain calls, protos out."""

from __future__ import annotations

from google.protobuf import empty_pb2

from brewmesh.errors import NotFound, Violations
from brewmesh.names import check_language
from brewmesh.pagination import paging_query, read_page
from brewmesh.recipes.v1 import formatters_pb2, formatters_pb2_grpc
from brewmesh.runtime import Runtime
from brewmesh.services.recipes import convert, formatters
from brewmesh.services.recipes.changes import Announcer
from brewmesh.services.recipes.formatter_cache import FormatterCache
from brewmesh.services.recipes.locales import check_locale
from brewmesh.services.recipes.rpc import Context, checked


class FormatterServicer(formatters_pb2_grpc.FormatterServiceServicer):
    def __init__(self, rt: Runtime, announce: Announcer, cache: FormatterCache) -> None:
        self.rt = rt
        self.announce = announce
        self.cache = cache

    async def PutVolumeFormatter(  # noqa: N802
        self,
        request: formatters_pb2.PutVolumeFormatterRequest,
        context: Context[formatters_pb2.PutVolumeFormatterRequest, formatters_pb2.VolumeFormatter],
    ) -> formatters_pb2.VolumeFormatter:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        with v.under("volume_formatter"):
            parsed = formatters.check_input(v, convert.formatter_input(request.volume_formatter))
        spec = checked(v, parsed)
        put = await self.rt.store.quick_write(lambda tx: formatters.put(tx, spec, principal, self.announce))
        return convert.formatter_proto(put)

    async def GetVolumeFormatter(  # noqa: N802
        self,
        request: formatters_pb2.GetVolumeFormatterRequest,
        context: Context[formatters_pb2.GetVolumeFormatterRequest, formatters_pb2.VolumeFormatter],
    ) -> formatters_pb2.VolumeFormatter:
        v = Violations()
        locale = checked(v, formatters.parse_formatter_name(v, "name", request.name))
        return convert.formatter_proto(await self.rt.store.lookup(lambda tx: formatters.get(tx, locale)))

    async def ListVolumeFormatters(  # noqa: N802
        self,
        request: formatters_pb2.ListVolumeFormattersRequest,
        context: Context[
            formatters_pb2.ListVolumeFormattersRequest, formatters_pb2.ListVolumeFormattersResponse
        ],
    ) -> formatters_pb2.ListVolumeFormattersResponse:
        v = Violations()
        language = request.language_code
        if language:
            check_language(v, "language_code", language)
        query = paging_query("ListVolumeFormatters", language_code=language)
        shown, token = await read_page(
            v, self.rt.store, self.rt.page_tokens, request, query,
            lambda tx, after, limit: formatters.list_page(tx, language, after, limit),
            lambda formatter: formatter.spec.locale.tag,
        )  # fmt: skip
        return formatters_pb2.ListVolumeFormattersResponse(
            volume_formatters=[convert.formatter_proto(f) for f in shown], next_page_token=token
        )

    async def DeleteVolumeFormatter(  # noqa: N802
        self,
        request: formatters_pb2.DeleteVolumeFormatterRequest,
        context: Context[formatters_pb2.DeleteVolumeFormatterRequest, empty_pb2.Empty],
    ) -> empty_pb2.Empty:
        principal = await self.rt.auth.require_any(context)
        v = Violations()
        locale = checked(v, formatters.parse_formatter_name(v, "name", request.name))
        await self.rt.store.quick_write(lambda tx: formatters.delete(tx, locale, principal, self.announce))
        return empty_pb2.Empty()

    async def FormatVolume(  # noqa: N802
        self,
        request: formatters_pb2.FormatVolumeRequest,
        context: Context[formatters_pb2.FormatVolumeRequest, formatters_pb2.FormatVolumeResponse],
    ) -> formatters_pb2.FormatVolumeResponse:
        v = Violations()
        formatters.check_volume(v, "volume_ml", request.volume_ml)
        locale = checked(v, check_locale(v, request.language_code, request.country_code))
        formatter = await self.cache.resolve(locale)
        if formatter is None:
            raise NotFound(formatters.missing_message(locale))
        text = formatters.format_volume(formatter.spec, request.volume_ml)
        return formatters_pb2.FormatVolumeResponse(text=text, formatter=formatter.name)
