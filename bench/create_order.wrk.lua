-- wrk script for bench/create_order.py: POST /order/create of one unit of a random plentiful SKU.
local first_sku = tonumber(os.getenv("FIRST_SKU") or "900000001")
local sku_count = tonumber(os.getenv("SKU_COUNT") or "100")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  local body = string.format('{"userId": %d, "items": [{"sku": %d, "count": 1}]}',
    math.random(1, 1000000), first_sku + math.random(0, sku_count - 1))
  return wrk.format(nil, "/order/create", nil, body)
end
local non2xx = 0
response = function(status, headers, body)
  if status ~= 200 then non2xx = non2xx + 1 end
end
