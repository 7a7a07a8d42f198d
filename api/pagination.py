"""Every /api list is paged: `?limit=` up to MAX_LIMIT (larger asks are clamped), `?offset=` from 0.

DRF's LimitOffsetPagination has no ceiling by default (one request could read every row), silently
ignores a limit it cannot read, and hands a limit beyond 64 bits to the database (a 500). Here an
unreadable or negative value is a 400 naming the parameter, and a limit above the ceiling is clamped:
the answer's `next` link says where the rest is.
"""
from rest_framework import pagination, serializers

MAX_LIMIT = 200


def query_integer(request, name: str, *, minimum: int, default: int) -> int:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw) if raw.isascii() and raw.isdigit() else None  # no signs, spaces or "1_000"
    except ValueError:  # longer than Python converts (4,300 digits)
        value = None
    if value is None or value < minimum:
        raise serializers.ValidationError({name: [f"Must be an integer of at least {minimum}."]})
    return value


class BoundedLimitOffsetPagination(pagination.LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        return min(query_integer(request, self.limit_query_param, minimum=1, default=self.default_limit),
                   self.max_limit)

    def get_offset(self, request):
        return query_integer(request, self.offset_query_param, minimum=0, default=0)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.limit_query_param:
                parameter["schema"]["minimum"] = 1  # no maximum: a larger limit is clamped, not refused
                parameter["description"] = f"Number of results to return per page (at most {self.max_limit})."
            elif parameter["name"] == self.offset_query_param:
                parameter["schema"]["minimum"] = 0
        return parameters
