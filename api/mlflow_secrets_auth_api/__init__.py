"""The MlflowAuthBinding API: the one model the operator and the webhook share.

Names on the wire (camelCase) are the CRD's; Python attributes are snake_case.
The CRD in ``crds/`` is the source of truth for validation at ``kubectl apply``;
these models parse what the API server already accepted, and fail loudly on drift.
"""
from .binding import (  # noqa: F401
    GROUP,
    VERSION,
    KIND,
    PLURAL,
    API_VERSION,
    CRD_NAME,
    ANNOTATION_BINDING,
    ANNOTATION_INJECTED,
    ANNOTATION_SYNC,
    ANNOTATION_CREDENTIAL_VERSION,
    LABEL_POD_BINDING,
    pod_label_value,
    LABEL_INJECT,
    LABEL_BINDING,
    LABEL_MANAGED_BY,
    SECRET_TYPE,
    SECRET_KEYS,
    MlflowAuthBinding,
    BindingSpec,
    BindingStatus,
    Condition,
    secret_name_for,
    parse_duration,
    MANAGED_BY,
    MAX_BINDING_NAME,
    MIN_REFRESH_SECONDS,
)
