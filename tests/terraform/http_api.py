"""API Gateway's HTTP API, played in front of the applied stack's functions, for real clients.

moto stores the API Terraform created (routes, integrations, authorization
types) but never invokes a Lambda, so a client cannot call the stack through
it. ``HttpApiGateway`` is a small aiohttp server that does what API Gateway
does for each request, reading the configuration back from moto rather than
assuming it:

1. match the request to a route of the API (``GET /zip-jobs/{id}``) or
   answer 404 ``{"message":"Not Found"}``;
2. enforce the route's authorization: ``AWS_IAM`` verifies the request's
   SigV4 signature independently (``tests/support/sigv4.py``), then the
   caller's identity policies must allow ``execute-api:Invoke`` on the
   route's ARN; anything else is a 403, and the function is never invoked.
   https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-access-control-iam.html
3. refuse a body over the HTTP API's 10 MB or an event over Lambda's 6 MB
   synchronous payload with 413 (docs/aws.md, rule A1);
4. check that the function's resource policy admits the SourceArn the call
   carries (else 500, "Invalid permissions on Lambda function": docs/aws.md,
   rule L1), build the payload format 2.0 event, invoke the function
   in-process with the environment Terraform gave it (``stack_functions``),
   and map its result back to HTTP (statusCode/headers/body/cookies, or a
   bare JSON value as a 200).
   https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html

It is a test double for the parts of API Gateway the stack relies on, not an
emulator: no JWT authorizer, throttling, CORS preflight or named stages.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import socket
import threading
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from tests.lambda_.events import FakeContext, http_api_event
from tests.support.iam_policy import Request, allows
from tests.support.sigv4 import SignatureRejected, check_signed_request

if TYPE_CHECKING:
    from tests.terraform.conftest import TfStack
    from tests.terraform.stack_functions import Functions

HTTP_API_MAX_BODY = 10 * 1024 * 1024  # HTTP API payload quota (10 MB)
LAMBDA_MAX_EVENT = 6 * 1024 * 1024  # synchronous invocation request payload (6 MB)
STAGE = "$default"
APIGW = {"Service": "apigateway.amazonaws.com"}
_TEXT_TYPES = ("text/", "application/json", "application/problem+json", "application/xml")


def _message(status: int, message: str) -> web.Response:
    """API Gateway's own errors: a JSON ``message``, not problem+json."""
    return web.json_response({"message": message}, status=status)


@dataclass(frozen=True)
class Route:
    key: str
    method: str
    pattern: re.Pattern[str]
    authorization: str
    function: str  # the stack's role key: enqueue, status, ...
    function_arn: str
    resource_policy: str


def _template_regex(template: str) -> re.Pattern[str]:
    """``/zip-jobs/{id}`` -> a regex with named groups; ``{name+}`` is greedy."""
    out = ""
    for part in re.split(r"(\{[^}]+\})", template):
        if part.startswith("{") and part.endswith("+}"):
            out += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            out += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            out += re.escape(part)
    return re.compile(out)


def route_functions(stack: TfStack) -> dict[str, tuple[dict[str, Any], str]]:
    """Route key -> (the route as API Gateway stores it, the function its integration invokes)."""
    api = stack.client("apigatewayv2")
    api_id = stack.outputs["api_id"]
    integrations = {i["IntegrationId"]: i for i in api.get_integrations(ApiId=api_id)["Items"]}
    by_name = {name: fn for fn, name in stack.outputs["function_names"].items()}
    out = {}
    for route in api.get_routes(ApiId=api_id)["Items"]:
        integration = integrations[route["Target"].removeprefix("integrations/")]
        assert integration["PayloadFormatVersion"] == "2.0", integration
        uri = integration["IntegrationUri"]
        function = next(fn for name, fn in by_name.items() if f":function:{name}/" in uri)
        out[route["RouteKey"]] = (route, function)
    return out


def read_routes(stack: TfStack) -> list[Route]:
    lam = stack.client("lambda")
    routes = []
    for key, (route, function) in route_functions(stack).items():
        name = stack.outputs["function_names"][function]
        method, template = key.split(" ", 1)
        routes.append(
            Route(
                key=key,
                method=method,
                pattern=_template_regex(template),
                authorization=route.get("AuthorizationType", "NONE"),
                function=function,
                function_arn=lam.get_function_configuration(FunctionName=name)["FunctionArn"],
                resource_policy=lam.get_policy(FunctionName=name)["Policy"],
            )
        )
    return routes


def identity_policies(stack: TfStack, user: str) -> list[Any]:
    """The IAM user's inline and attached policies, as IAM holds them now."""
    iam = stack.client("iam")
    docs: list[Any] = [
        iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"]
        for name in iam.list_user_policies(UserName=user)["PolicyNames"]
    ]
    for attached in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]:
        policy = iam.get_policy(PolicyArn=attached["PolicyArn"])["Policy"]
        version = iam.get_policy_version(
            PolicyArn=attached["PolicyArn"], VersionId=policy["DefaultVersionId"]
        )
        docs.append(version["PolicyVersion"]["Document"])
    return [json.loads(d) if isinstance(d, str) else d for d in docs]


@dataclass(frozen=True)
class Caller:
    """An IAM user's access key as AWS knows it (the secret never leaves AWS, or this test)."""

    user_name: str
    user_arn: str
    secret_key: str


class HttpApiGateway:
    """The stack's HTTP API on 127.0.0.1; ``url`` is its invoke URL once started."""

    def __init__(self, stack: TfStack, fns: Functions, callers: dict[str, Caller]) -> None:
        self.stack = stack
        self.fns = fns
        self.callers = callers
        self.routes = read_routes(stack)
        self.region = stack.endpoint.region
        self.execution_arn = str(stack.outputs["api_execution_arn"])
        self.invocations: Counter[str] = Counter()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None

    # ---- what API Gateway does per request ----

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            found = route.pattern.fullmatch(path)
            if found and route.method == method:
                return route, found.groupdict()
        return None

    def _authorize_iam(
        self, request: web.Request, body: bytes, headers: list[tuple[str, str]], arn: str
    ) -> dict[str, Any] | web.Response:
        """SigV4 checked independently, then ``execute-api:Invoke`` on the route's ARN.

        The event's ``requestContext.authorizer`` block when admitted, else the refusal.
        """
        secrets = {key: c.secret_key for key, c in self.callers.items()}
        try:
            claims = check_signed_request(
                method=request.method,
                raw_path=request.rel_url.raw_path,
                raw_query=request.rel_url.raw_query_string,
                headers=headers,
                body=body,
                secret_for=secrets,
                region=self.region,
                now=dt.datetime.now(dt.UTC),
            )
        except SignatureRejected as err:
            text = str(err)
            return _message(403, "Forbidden" if "Missing" in text else text)
        caller = self.callers[claims.access_key]
        policies = identity_policies(self.stack, caller.user_name)
        if not allows(policies, Request("execute-api:Invoke", arn, {})):
            return _message(
                403,
                f"User: {caller.user_arn} is not authorized to perform: "
                f"execute-api:Invoke on resource: {arn}",
            )
        account = caller.user_arn.split(":")[4]
        return {
            "iam": {
                "accessKey": claims.access_key,
                "accountId": account,
                "callerId": caller.user_name,
                "cognitoIdentity": None,
                "principalOrgId": None,
                "userArn": caller.user_arn,
                "userId": caller.user_name,
            }
        }

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        matched = self._match(request.method, request.path)
        if matched is None:
            return _message(404, "Not Found")
        route, params = matched
        if len(body) > HTTP_API_MAX_BODY:
            return _message(413, "Request Entity Too Large")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        route_arn = f"{self.execution_arn}/{STAGE}/{request.method}{request.path}"
        authorizer = None
        if route.authorization == "AWS_IAM":
            admitted = self._authorize_iam(request, body, headers, route_arn)
            if isinstance(admitted, web.Response):
                return admitted
            authorizer = admitted
        elif route.authorization != "NONE":
            raise NotImplementedError(f"{route.authorization} authorizers are not played here")
        # Lambda checks the SourceArn API Gateway invokes with against the function's policy.
        invoke = Request(
            "lambda:InvokeFunction", route.function_arn, {"aws:SourceArn": route_arn}, APIGW
        )
        if not allows([route.resource_policy], invoke):
            return _message(500, "Internal Server Error")
        event = self._event(request, route, params, headers, body, authorizer)
        if len(json.dumps(event).encode()) > LAMBDA_MAX_EVENT:
            return _message(413, "Request Entity Too Large")
        self.invocations[route.function] += 1
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                None, self.fns.call, route.function, event, FakeContext(30.0, route.function)
            )
        except Exception:  # the function failed: API Gateway says only this
            return _message(500, "Internal Server Error")
        return to_http(result)

    def _event(
        self,
        request: web.Request,
        route: Route,
        params: dict[str, str],
        headers: list[tuple[str, str]],
        body: bytes,
        authorizer: dict[str, Any] | None,
    ) -> dict[str, Any]:
        joined: dict[str, str] = {}
        for name, value in headers:
            key = name.lower()
            joined[key] = f"{joined[key]},{value}" if key in joined else value
        cookies = joined.pop("cookie", None)
        content_type = joined.get("content-type", "")
        text = not body or content_type.startswith(_TEXT_TYPES)
        event = http_api_event(
            request.method,
            request.rel_url.raw_path,
            route_key=route.key,
            path_parameters=params or None,
            headers=joined,
            body=body if text else base64.b64encode(body),
            base64_body=not text,
            raw_query=request.rel_url.raw_query_string,
            stage=STAGE,
            authorizer=authorizer,
            source_ip=request.remote or "127.0.0.1",
        )
        if cookies:
            event["cookies"] = cookies.split("; ")
        return event

    # ---- the server thread ----

    def start(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()
        ready = threading.Event()
        app = web.Application(client_max_size=HTTP_API_MAX_BODY + 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=serve, name="http-api-gateway", daemon=True)
        self._thread.start()
        assert ready.wait(30), "the API Gateway double did not start"
        self.url = f"http://{host}:{port}"
        return self.url

    def stop(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=60)


def to_http(result: Any) -> web.Response:
    """A function's result as API Gateway returns it (payload format 2.0).

    A dict with ``statusCode`` is a full response; anything else that is
    JSON becomes a 200 ``application/json`` body.
    """
    if isinstance(result, dict) and "statusCode" in result:
        status = result["statusCode"]
        if not isinstance(status, int):
            return _message(500, "Internal Server Error")
        raw = result.get("body") or ""
        body = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode("utf-8")
        response = web.Response(status=status, body=body, headers=result.get("headers") or {})
        for cookie in result.get("cookies") or []:
            response.headers.add("Set-Cookie", cookie)
        return response
    text = result if isinstance(result, str) else json.dumps(result)
    return web.Response(status=200, text=text, content_type="application/json")
