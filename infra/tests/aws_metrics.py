"""The AWS metrics dashboards and alarms may use: namespace -> metric -> the dimension sets AWS documents
for it. Anything not listed here (and not in the relay's or canary's catalog) fails the ops tests, so a
typo in a metric or dimension name cannot reach a dashboard that silently shows nothing.

Sources: the CloudWatch metrics pages of API Gateway (HTTP APIs), Lambda and DynamoDB in the AWS
documentation. Add a metric only with its documented dimensions; never add one to make a test pass.
"""

from __future__ import annotations

NO_DIMENSIONS: frozenset[str] = frozenset()


def dims(*names: str) -> frozenset[str]:
    return frozenset(names)


_API = [dims("ApiId"), dims("ApiId", "Stage"), dims("ApiId", "Method", "Resource", "Stage")]
_FUNCTION = [dims("FunctionName"), dims("FunctionName", "Resource"), dims("FunctionName", "ExecutedVersion", "Resource")]
_TABLE = [dims("TableName")]
_TABLE_OR_INDEX = [dims("TableName"), dims("TableName", "GlobalSecondaryIndexName")]
_TABLE_OPERATION = [dims("TableName", "Operation")]

AWS_METRICS: dict[str, dict[str, list[frozenset[str]]]] = {
    # HTTP API metrics (API Gateway v2). Latencies in milliseconds.
    "AWS/ApiGateway": {
        "Count": _API,
        "4xx": _API,
        "5xx": _API,
        "Latency": _API,
        "IntegrationLatency": _API,
        "DataProcessed": _API,
    },
    "AWS/Lambda": {
        "Invocations": _FUNCTION,
        "Errors": _FUNCTION,
        "Throttles": _FUNCTION,
        "Duration": _FUNCTION,
        "ConcurrentExecutions": [NO_DIMENSIONS, *_FUNCTION],
        "UnreservedConcurrentExecutions": [NO_DIMENSIONS],
        "ClaimedAccountConcurrency": [NO_DIMENSIONS],
    },
    "AWS/DynamoDB": {
        "ConsumedReadCapacityUnits": _TABLE_OR_INDEX,
        "ConsumedWriteCapacityUnits": _TABLE_OR_INDEX,
        "ReadThrottleEvents": _TABLE_OR_INDEX,
        "WriteThrottleEvents": _TABLE_OR_INDEX,
        "ThrottledRequests": _TABLE_OPERATION,
        "SuccessfulRequestLatency": _TABLE_OPERATION,
        "SystemErrors": _TABLE_OPERATION,
        # UserErrors is reported per account and region only.
        "UserErrors": [NO_DIMENSIONS],
        "ConditionalCheckFailedRequests": _TABLE,
        "TransactionConflict": _TABLE,
    },
}
