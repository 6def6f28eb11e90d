-- Cycles through the requests listed in the file given after `--`: one per line, path TAB header.
local requests = {}
local index = 0

function init(args)
  for line in io.lines(args[1]) do
    local path, header = line:match("^([^\t]*)\t?(.*)$")
    local headers = {}
    local name, value = header:match("^([^:]+):%s*(.*)$")
    if name then
      headers[name] = value
    end
    requests[#requests + 1] = wrk.format("GET", path, headers)
  end
  index = math.random(#requests) - 1
end

function request()
  index = index % #requests + 1
  return requests[index]
end
